// The live dashboard (serving/dashboard.py): polls /dashboard/data every second and redraws
// six Chart.js charts. window.rtrecCharts exposes the charts so a test can read their data.
"use strict";
(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];
  const color = (i) => COLORS[i % COLORS.length];
  const timeAxis = { type: "linear", ticks: { callback: (v) => `${Number(v.toFixed(1))} s` } };

  function lineChart(id, yTitle) {
    return new Chart(document.getElementById(id), {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false, parsing: false, normalized: true, spanGaps: true,
        elements: { point: { radius: 0 } },
        scales: { x: timeAxis, y: { beginAtZero: true, title: { display: true, text: yTitle } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function barChart(id, label, horizontal) {
    return new Chart(document.getElementById(id), {
      type: "bar",
      data: { labels: [], datasets: [{ label: label, data: [], backgroundColor: "#1f77b4" }] },
      options: {
        animation: false, indexAxis: horizontal ? "y" : "x",
        plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true }, y: { beginAtZero: true } },
      },
    });
  }

  const charts = {
    ctr_window: lineChart("ctr_window", "CTR"),
    ctr_total: lineChart("ctr_total", "CTR"),
    freshness: lineChart("freshness", "seconds"),
    events: lineChart("events", "events/s"),
    dead: barChart("dead", "dead letters", false),
    top: barChart("top", "updates", true),
  };
  window.rtrecCharts = charts;
  window.rtrecPolls = 0;

  function setLines(chart, series) {
    // series: [[label, [{x, y}, ...]], ...]; datasets keep their identity across polls
    series.forEach(([label, points], i) => {
      let ds = chart.data.datasets.find((d) => d.label === label);
      if (!ds) {
        ds = { label: label, data: [], borderColor: color(i), backgroundColor: color(i),
               borderWidth: 2 };
        chart.data.datasets.push(ds);
      }
      ds.data = points;
    });
    chart.update("none");
  }

  function render(d) {
    const pts = d.points;
    const t0 = pts.length ? pts[0].t : 0;
    const xy = (key, sub) => pts
      .map((p) => ({ x: p.t - t0, y: sub === undefined ? p[key] : (p[key] || {})[sub] }))
      .filter((p) => p.y !== null && p.y !== undefined);
    setLines(charts.ctr_window, d.policies.map((p) => [p, xy("ctr_window", p)]));
    setLines(charts.ctr_total, d.policies.map((p) => [p, xy("ctr_total", p)]));
    setLines(charts.freshness, [["p50 at answer", xy("param_age_p50_s")],
                                ["p99 at answer", xy("param_age_p99_s")],
                                ["snapshot age now", xy("snapshot_age_s")]]);
    setLines(charts.events, [["serving logged", xy("events_per_s")],
                             ["job read", xy("job_events_per_s")]]);
    const dead = d.dead_letters || {};
    charts.dead.data.labels = Object.keys(dead);
    charts.dead.data.datasets[0].data = Object.values(dead);
    charts.dead.update("none");
    charts.top.data.labels = d.top_products.map((p) => p.product_id);
    charts.top.data.datasets[0].data = d.top_products.map((p) => p.updates);
    charts.top.update("none");
    document.querySelectorAll(".window").forEach((e) => { e.textContent = d.window_s; });
    const last = pts[pts.length - 1] || {};
    document.getElementById("status").textContent =
      `${pts.length} samples; ${last.impressions || 0} recommendations; ` +
      `${last.products_with_params || 0} products learned; model version ` +
      `${last.model_version || 0}; job: ${d.job ? "reporting" : "no metrics endpoint"}; ` +
      `updated ${new Date().toLocaleTimeString()}`;
  }

  // What each chart holds and how many of its pixels are in the data colours (not axes,
  // grid or text): written into the page so a headless browser's --dump-dom shows it.
  const RGB = COLORS.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  function painted(chart) {
    const ctx = chart.canvas.getContext("2d");
    const px = ctx.getImageData(0, 0, chart.canvas.width, chart.canvas.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] < 128) continue;
      if (RGB.some(([r, g, b]) => Math.abs(px[i] - r) + Math.abs(px[i + 1] - g)
                                  + Math.abs(px[i + 2] - b) < 40)) n += 1;
    }
    return n;
  }
  function report() {
    const out = { polls: window.rtrecPolls, charts: {} };
    for (const [name, chart] of Object.entries(charts)) {
      const points = chart.data.datasets.reduce((sum, ds) => sum + ds.data.length, 0);
      out.charts[name] = { points: points, painted: painted(chart) };
    }
    let pre = document.getElementById("chart-report");
    if (!pre) {
      pre = document.createElement("pre");
      pre.id = "chart-report";
      pre.style.display = "none";
      document.body.appendChild(pre);
    }
    pre.textContent = JSON.stringify(out);
  }

  async function poll() {
    try {
      const r = await fetch("/dashboard/data", { cache: "no-store" });
      if (r.ok) {
        render(await r.json());
        window.rtrecPolls += 1;
        report();
      } else {
        document.getElementById("status").textContent = `data: HTTP ${r.status}`;
      }
    } catch (e) {
      document.getElementById("status").textContent = `data: ${e}`;
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
