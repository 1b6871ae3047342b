// Back brings a sent payment form back re-fetched, with a new idempotency key but (restored by the browser) the
// values it was sent with. Sent again unchanged, it carries the key it was first sent with, so the server answers
// "already recorded" instead of recording the same money twice; changed values are other money and keep the new key.
(() => {
  const form = document.querySelector("form[data-idempotent]");
  if (!form) return;
  const key = form.elements.namedItem("idempotency_key");
  const navigation = performance.getEntriesByType("navigation")[0];
  const returned = Boolean(navigation) && navigation.type === "back_forward";
  const slot = `sent-form:${location.pathname}${location.search}`;
  const ignored = new Set(["idempotency_key", "csrf_token", "confirm_duplicate"]);
  const values = () => JSON.stringify([...new FormData(form)].filter(([name]) => !ignored.has(name)));
  form.addEventListener("submit", () => {
    let sent = null;
    try {
      sent = JSON.parse(sessionStorage.getItem(slot));
    } catch {
      sent = null;
    }
    if (returned && sent && sent.values === values()) key.value = sent.key;
    sessionStorage.setItem(slot, JSON.stringify({ key: key.value, values: values() }));
  });
})();
