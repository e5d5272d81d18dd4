// Draws the experiment page's charts from the JSON the server embedded (no secrets, no
// inline script), and fills each chart's "Numbers" table from the same data.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#2d6cdf", "#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4",
                 "#525df4", "#bf399e", "#6c8893", "#ee6868"];
  function color(i, alpha) {
    var hex = palette[i % palette.length];
    if (alpha === undefined) { return hex; }
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }
  var common = { responsive: true, maintainAspectRatio: false, animation: false,
                 interaction: { mode: "index", intersect: false },
                 plugins: { legend: { position: "bottom", labels: { filter: function (item, chart) {
                   return !chart.datasets[item.datasetIndex].band; } } } } };
  function options(extra) { return Object.assign({}, common, extra); }
  function fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }

  var builders = {
    allocation: function () {
      var a = data.allocation;
      return { type: "line", data: { labels: a.labels, datasets: data.variants.map(function (v, i) {
        return { label: v, data: a.series[v], fill: i === 0 ? "origin" : "-1", borderColor: color(i),
                 backgroundColor: color(i, 0.35), pointRadius: 0, tension: 0 }; }) },
        options: options({ scales: { y: { stacked: true, min: 0, max: 100,
                                           title: { display: true, text: "% of traffic" } } } }) };
    },
    daily: function () {
      var d = data.daily, sets = [];
      data.variants.forEach(function (v, i) {
        var points = d.series[v];
        sets.push({ label: v + " upper", band: true, data: points.map(function (p) { return p.upper; }),
                    borderWidth: 0, pointRadius: 0, fill: false, spanGaps: true });
        sets.push({ label: v + " lower", band: true, data: points.map(function (p) { return p.lower; }),
                    borderWidth: 0, pointRadius: 0, fill: "-1", backgroundColor: color(i, 0.15), spanGaps: true });
        sets.push({ label: v, data: points.map(function (p) { return p.mean; }), borderColor: color(i),
                    backgroundColor: color(i), pointRadius: 2, fill: false, spanGaps: true });
      });
      return { type: "line", data: { labels: d.labels, datasets: sets }, options: options({}) };
    },
    density: function () {
      var d = data.density;
      return { type: "line", data: { labels: d.x.map(function (x) { return fmt(x, 4); }),
        datasets: data.variants.map(function (v, i) {
          return { label: v, data: d.series[v], borderColor: color(i), backgroundColor: color(i, 0.15),
                   fill: true, pointRadius: 0 }; }) },
        options: options({ scales: { x: { ticks: { maxTicksLimit: 8 } },
                                     y: { title: { display: true, text: "density" } } } }) };
    },
    best: function () {
      var b = data.best;
      return { type: "line", data: { labels: b.labels, datasets: data.variants.map(function (v, i) {
        return { label: v, data: b.series[v], borderColor: color(i), backgroundColor: color(i),
                 pointRadius: 0, fill: false }; }) },
        options: options({ scales: { y: { min: 0, max: 1 } } }) };
    }
  };

  function table(name) {
    var rows = [], head, labels;
    if (name === "daily") {
      head = ["date", "variant", "impressions", "successes", "mean", "lower 95%", "upper 95%"];
      data.daily.labels.forEach(function (day, i) {
        data.variants.forEach(function (v) {
          var p = data.daily.series[v][i];
          rows.push([day, v, p.impressions, p.successes, fmt(p.mean, 4), fmt(p.lower, 4), fmt(p.upper, 4)]);
        });
      });
    } else {
      var block = data[name];
      labels = name === "density" ? block.x.map(function (x) { return fmt(x, 5); }) : block.labels;
      head = [name === "density" ? "x" : "date"].concat(data.variants);
      labels.forEach(function (label, i) {
        rows.push([label].concat(data.variants.map(function (v) {
          return fmt(block.series[v][i], name === "allocation" ? 1 : 4); })));
      });
    }
    var el = document.querySelector('table[data-table="' + name + '"]');
    if (!el) { return; }
    var html = "<thead><tr>" + head.map(function (h) { return "<th>" + h + "</th>"; }).join("") + "</tr></thead><tbody>";
    rows.forEach(function (r) {
      html += "<tr>" + r.map(function (c) { return "<td>" + String(c).replace(/[&<>]/g, "") + "</td>"; }).join("") + "</tr>";
    });
    el.innerHTML = html + "</tbody>";
  }

  function guardrail(metric) {
    var g = data.guardrails[metric];
    return { type: "line", data: { labels: g.labels, datasets: data.variants.map(function (v, i) {
      return { label: v, data: g.series[v], borderColor: color(i), backgroundColor: color(i),
               pointRadius: 0, fill: false, spanGaps: true }; }) },
      options: options({}) };
  }

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var name = canvas.getAttribute("data-chart");
    if (name.indexOf("guardrail:") === 0) {
      new Chart(canvas, guardrail(name.slice("guardrail:".length)));
      return;
    }
    new Chart(canvas, builders[name]());
    table(name);
  });
}());
