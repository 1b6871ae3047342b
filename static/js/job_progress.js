// Live progress of a billing run: poll the run's progress.json every second and update the bar, the counts
// and the steps until the run reaches a final status. The URL comes from a data attribute (CSP: no inline JS).
(() => {
  const root = document.getElementById("job-progress");
  if (!root || !root.dataset.progressUrl) return;
  const FINAL = new Set(["succeeded", "failed", "partial"]);
  const COLOURS = { running: "info", succeeded: "success", failed: "danger", partial: "warning" };
  const part = (name) => root.querySelector(`[data-role="${name}"]`);

  const badge = (status) => {
    const span = document.createElement("span");
    span.className = `badge text-bg-${COLOURS[status] || "light"}`;
    span.textContent = status;
    return span;
  };

  const label = (key) => key.replaceAll("_", " ");

  function render(data) {
    const percent = Math.max(0, Math.min(100, Number(data.percent) || 0));
    const bar = part("bar");
    bar.style.width = `${percent}%`;
    bar.textContent = `${percent}%`;
    bar.parentElement.setAttribute("aria-valuenow", String(percent));
    bar.classList.toggle("progress-bar-animated", data.status === "running");
    bar.classList.toggle("progress-bar-striped", data.status === "running");
    bar.classList.toggle("bg-danger", data.status === "failed");
    bar.classList.toggle("bg-warning", data.status === "partial");
    part("done").textContent = data.done;
    part("total").textContent = data.total;
    const status = document.getElementById("job-status");
    if (status) status.replaceChildren(badge(data.status));
    root.dataset.status = data.status;

    const counts = part("counts");
    // The server words the counts as the page does ("Invoiced: $1,204.50"); raw keys only from an older server.
    const entries = Array.isArray(data.count_words)
      ? data.count_words.map((c) => [c.label, c.value])
      : Object.entries(data.counts || {}).map(([key, value]) => [label(key), value]);
    counts.replaceChildren(...entries.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.className = "col-7";
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.className = "col-5";
      dd.textContent = value;
      return [dt, dd];
    }));
    const error = part("error");
    error.textContent = data.error || "";
    error.classList.toggle("d-none", !data.error);
    if (data.finished_words) part("finished").textContent = data.finished_words;
    else if (data.finished_at) part("finished").textContent = data.finished_at.replace("T", " ").slice(0, 19) + " UTC";

    const steps = part("steps");
    if (Array.isArray(data.steps) && data.steps.length) {
      steps.replaceChildren(...data.steps.map((step) => {
        const row = document.createElement("tr");
        const name = document.createElement("td");
        const link = document.createElement("a");
        link.href = root.dataset.progressUrl.replace(/\/\d+\/progress\.json$/, `/${step.id}`);
        link.textContent = step.label || label(step.kind);
        name.append(link);
        const state = document.createElement("td");
        state.append(badge(step.status));
        const done = document.createElement("td");
        done.textContent = `${step.done_chunks}/${step.total_chunks}`;
        row.append(name, state, done);
        return row;
      }));
    }
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.progressUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        render(data);
        if (FINAL.has(data.status)) return;
      }
    } catch (err) {
      // A dropped connection or a restarting server: keep polling, the next answer catches up.
    }
    setTimeout(poll, 1000);
  }

  if (!FINAL.has(root.dataset.status)) setTimeout(poll, 1000);
})();
