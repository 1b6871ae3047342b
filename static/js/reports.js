// Charts on the report pages. Each <canvas data-chart='{"type", "labels", "currency", "series": [{label, cents}]}'>
// becomes a Chart.js chart (static/vendor/chart.js). The tables beside them carry the same figures, so without
// JavaScript, or if Chart.js fails to load, nothing is lost. No inline script or style: the CSP forbids both.
(() => {
  "use strict";
  if (typeof window.Chart !== "function") return;
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function moneyFormatter(currency) {
    let format;
    try {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency }).format;
    } catch (_unknownCurrency) {
      format = (value) => `${value.toFixed(2)} ${currency}`;
    }
    // Amounts arrive as integer cents; dividing only for display is exact enough for a label.
    return (cents) => format(Number(cents) / 100);
  }

  function options(spec, money) {
    const circular = spec.type === "doughnut" || spec.type === "pie";
    const label = (ctx) => {
      const name = circular ? ctx.label : ctx.dataset.label;
      return `${name}: ${money(ctx.raw)}`;
    };
    const chosen = {
      responsive: true,
      aspectRatio: circular ? 1.6 : 2.4,
      plugins: {
        legend: { display: circular || spec.series.length > 1, position: circular ? "right" : "top" },
        tooltip: { callbacks: { label } },
      },
      scales: circular ? {} : { y: { beginAtZero: true, ticks: { callback: (value) => money(value) } } },
    };
    if (reducedMotion) chosen.animation = false;
    return chosen;
  }

  document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
    let spec;
    try {
      spec = JSON.parse(canvas.dataset.chart);
    } catch (_malformed) {
      return;
    }
    const money = moneyFormatter(spec.currency || "USD");
    const chart = new window.Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.series.map((series) => ({ label: series.label, data: series.cents })),
      },
      options: options(spec, money),
    });
    canvas.dataset.chartReady = "true"; // lets the browser tests see the chart was drawn
    canvas.chart = chart;
  });
})();
