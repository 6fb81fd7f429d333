/* perfsuite trends: one interactive chart per <div class="trend-chart">, drawn as SVG from the JSON beside it.
   Static and self-contained (no library, no server): x = the nights' dates with their commits, y = the metric,
   a point for every night, each series a line; a step's commit range shaded red with its size; hover a point for its
   series, date, commit, value and run. Bundled inline by perfsuite/history/chart.py. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                 "#ccb974", "#64b5cd"];
  var STEP = "#c4281c";

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function fmt(v) {
    var a = Math.abs(v);
    return a >= 1e5 ? v.toExponential(3) : a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(3) : v.toPrecision(4);
  }

  function draw(box) {
    var data = JSON.parse(box.querySelector("script[type='application/json']").textContent);
    var RUNS = data.runs;  // the chart's nights: [[time ms, "date", "commit", run id], ...]
    var holder = box.querySelector(".chart");
    var W = Math.max(640, holder.clientWidth || 960), H = 360;
    var m = {l: 72, r: 18, t: 16, b: 62};
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "trend-svg"}, holder);
    var t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
    data.series.forEach(function (s) {
      s.points.forEach(function (p) {
        var t = RUNS[p[0]][0];
        t0 = Math.min(t0, t); t1 = Math.max(t1, t); v0 = Math.min(v0, p[1]); v1 = Math.max(v1, p[1]);
      });
    });
    if (t1 === t0) { t0 -= 43200000; t1 += 43200000; }
    var pad = (v1 - v0) * 0.08 || Math.abs(v1) * 0.05 || 1;
    v0 -= pad; v1 += pad;
    function x(t) { return m.l + (t - t0) / (t1 - t0) * (W - m.l - m.r); }
    function y(v) { return H - m.b - (v - v0) / (v1 - v0) * (H - m.t - m.b); }

    var axes = el("g", {"class": "axes", "font-size": "11", fill: "#333"}, svg);
    for (var k = 0; k <= 5; k++) {  // y: six levels
      var v = v0 + (v1 - v0) * k / 5;
      el("line", {x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), stroke: "#e5e5e5"}, axes);
      el("text", {x: m.l - 6, y: y(v) + 4, "text-anchor": "end"}, axes).textContent = fmt(v);
    }
    var yl = el("text", {x: 14, y: (H - m.b + m.t) / 2, "text-anchor": "middle",
                         transform: "rotate(-90 14 " + (H - m.b + m.t) / 2 + ")"}, axes);
    yl.textContent = data.ylabel;
    var used = {};
    data.series.forEach(function (s) { s.points.forEach(function (p) { used[p[0]] = true; }); });
    var idx = Object.keys(used).map(Number).sort(function (a, b) { return RUNS[a][0] - RUNS[b][0]; });
    var ticks = Math.min(8, idx.length);
    for (k = 0; k < ticks; k++) {  // x: up to eight nights, each its date and its commit
      var r = RUNS[idx[Math.round(k * (idx.length - 1) / Math.max(1, ticks - 1))]];
      var tx = x(r[0]);
      var anchor = ticks > 1 && k === 0 ? "start" : ticks > 1 && k === ticks - 1 ? "end" : "middle";  // inside
      el("line", {x1: tx, x2: tx, y1: H - m.b, y2: H - m.b + 5, stroke: "#555"}, axes);
      el("text", {x: tx, y: H - m.b + 18, "text-anchor": anchor}, axes).textContent = r[1];
      el("text", {x: tx, y: H - m.b + 32, "text-anchor": anchor, fill: "#777", "font-family": "monospace"},
         axes).textContent = r[2];
    }
    el("line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: "#555"}, axes);
    el("text", {x: (W + m.l) / 2, y: H - 8, "text-anchor": "middle"}, axes).textContent = "night (date, commit)";

    data.series.forEach(function (s, n) {  // steps first, under the lines
      s.steps.forEach(function (st) {
        var a = x(RUNS[st.good][0]), b = x(RUNS[st.bad][0]);
        el("rect", {x: a, y: m.t, width: Math.max(2, b - a), height: H - m.t - m.b, fill: STEP, "fill-opacity": 0.12,
                    "class": "step"}, svg);
        el("line", {x1: x(RUNS[st.at][0]), x2: x(RUNS[st.at][0]), y1: m.t, y2: H - m.b, stroke: STEP}, svg);
        el("text", {x: b + 4, y: m.t + 12 + 13 * (n % 4), fill: STEP, "font-size": "11"}, svg).textContent = st.label;
      });
    });
    var dots = [];
    data.series.forEach(function (s, n) {
      var colour = COLOURS[n % COLOURS.length];
      s.levels.forEach(function (lv) {
        el("line", {x1: x(RUNS[lv[0]][0]), x2: x(RUNS[lv[1]][0]), y1: y(lv[2]), y2: y(lv[2]), stroke: colour,
                    "stroke-dasharray": "4 3", "stroke-width": 1}, svg);
      });
      var d = s.points.map(function (p, i) { return (i ? "L" : "M") + x(RUNS[p[0]][0]).toFixed(1) + "," + y(p[1]).toFixed(1); });
      el("path", {d: d.join(""), fill: "none", stroke: colour, "stroke-width": s.steps.length ? 1.8 : 1.1,
                  "stroke-opacity": 0.9}, svg);
      s.points.forEach(function (p) {
        var c = el("circle", {cx: x(RUNS[p[0]][0]), cy: y(p[1]), r: 2.6, fill: colour, "class": "night"}, svg);
        dots.push({c: c, s: s, p: p});
      });
    });

    var tip = box.querySelector(".trend-tip");
    function show(hit) {
      var r = RUNS[hit.p[0]];
      tip.textContent = hit.s.label + " — " + r[1] + ", commit " + r[2] + ": " + fmt(hit.p[1]) + " " + data.unit +
                        " (run " + r[3] + ")";
      tip.style.display = "block";
    }
    svg.addEventListener("mousemove", function (ev) {
      var box2 = svg.getBoundingClientRect(), px = ev.clientX - box2.left, py = ev.clientY - box2.top;
      var best = null, bestD = 400;  // within 20 px
      dots.forEach(function (dot) {
        var dx = dot.c.cx.baseVal.value - px, dy = dot.c.cy.baseVal.value - py, dd = dx * dx + dy * dy;
        if (dd < bestD) { bestD = dd; best = dot; }
      });
      dots.forEach(function (dot) { dot.c.setAttribute("r", dot === best ? 5 : 2.6); });
      if (best) { show(best); } else { tip.style.display = "none"; }
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    var legend = box.querySelector(".trend-legend");
    data.series.forEach(function (s, n) {
      var item = document.createElement("span");
      item.style.color = COLOURS[n % COLOURS.length];
      item.textContent = "● " + s.label + (s.steps.length ? " (" + s.steps.length + " step" +
                         (s.steps.length > 1 ? "s" : "") + ")" : "");
      legend.appendChild(item);
    });
    box.setAttribute("data-drawn", String(dots.length));
  }

  var boxes = document.querySelectorAll(".trend-chart");
  for (var i = 0; i < boxes.length; i++) { draw(boxes[i]); }
})();
