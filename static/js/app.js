// Behaviour for the panel, loaded as a file so the CSP never needs 'unsafe-inline'.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// Disable a form's submit button once it is sent, so a double click cannot post twice.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.method.toLowerCase() !== "post") return;
  form.querySelectorAll("button[type=submit], input[type=submit]").forEach((b) => {
    setTimeout(() => { b.disabled = true; }, 0);
  });
});

// Widths of proportional bars come from data attributes (no inline style attributes).
document.querySelectorAll("[data-width]").forEach((el) => {
  el.style.width = `${Math.max(0, Math.min(100, Number(el.dataset.width)))}%`;
});
