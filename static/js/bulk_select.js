// Row selection on the staff lists: tick the whole page at once, and see how many rows are chosen.
// Loaded as a file (the CSP allows no inline script). Without it the list still works: every ticked row posts
// its id, and "Select all matching" posts the filter, which the server runs again.
(() => {
  const form = document.querySelector("[data-bulk-form]");
  if (!form) return;
  const rows = () => Array.from(form.querySelectorAll('input[type=checkbox][name="ids"]'));
  const pageBox = form.querySelector("[data-select-page]");
  const matching = form.querySelector("[data-select-matching]");
  const count = form.querySelector("[data-role=selected-count]");
  const needing = form.querySelectorAll("[data-needs-selection]");

  const update = () => {
    const boxes = rows();
    const ticked = boxes.filter((box) => box.checked).length;
    if (pageBox) {
      pageBox.checked = boxes.length > 0 && ticked === boxes.length;
      pageBox.indeterminate = ticked > 0 && ticked < boxes.length;
    }
    const all = matching && matching.checked;
    if (count) count.textContent = all ? "All matching rows chosen" : ticked ? `${ticked} chosen on this page` : "";
    needing.forEach((button) => { button.disabled = !all && ticked === 0; });
  };

  if (pageBox) {
    pageBox.hidden = false;
    pageBox.addEventListener("change", () => {
      rows().forEach((box) => { box.checked = pageBox.checked; });
      if (!pageBox.checked && matching) matching.checked = false;
      update();
    });
  }
  if (matching) {
    matching.addEventListener("change", () => {
      if (matching.checked) rows().forEach((box) => { box.checked = true; });
      update();
    });
  }
  form.addEventListener("change", (event) => {
    // Unticking one row means "not all of them" any more.
    if (event.target.name === "ids" && !event.target.checked && matching) matching.checked = false;
    update();
  });
  // A download leaves the page as it is: let its buttons be pressed again (app.js disables them on submit).
  form.addEventListener("submit", (event) => {
    if (event.submitter && event.submitter.hasAttribute("data-download")) {
      setTimeout(update, 1000);
    }
  });
  update();
})();
