// Parallel coordinates of the report (analysis/parcoords.py builds the data and inlines this file).
// Lines on one canvas (1,344 trials redraw in a few ms), axes, brushes and the hovered line in SVG.
// Data: JSON in #parcoords-data; positions are precomputed in [0, 1] per axis (0 = bottom).
// Every string is written with textContent, never as HTML. Marker: #parcoords-check gets
// data-status (ok / error), data-lines, data-axes ("|"-joined keys) and data-shown after drawing.
(function () {
  "use strict";
  // the SVG namespace, from the page's own <svg> (no URL in the page: the report's offline check)
  var SVGNS = document.getElementById("parcoords-legend").namespaceURI;
  // viridis at 0, 1/8, ..., 1 (colour-blind safe, monotone in lightness), stopped short of its
  // palest yellow, which would vanish on white
  var VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#a0da39", "#d0e11c"];
  var BINS = 32;  // colours per redraw: one canvas stroke per bin
  var M = { top: 44, bottom: 16, left: 16, right: 96 };
  var marker = document.getElementById("parcoords-check");

  function fail(err) {
    marker.setAttribute("data-status", "error");
    marker.setAttribute("data-error", String((err && err.message) || err));
    marker.hidden = false;
    marker.className = "warn";
    marker.textContent = "The parallel-coordinates view failed: " + String((err && err.message) || err);
    if (window.console) { console.error(err); }
  }

  function guard(fn) {
    return function (e) { try { return fn(e); } catch (err) { fail(err); } };
  }

  function hexRgb(h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; }

  function colour(t) {
    var x = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    var a = hexRgb(VIRIDIS[i]), b = hexRgb(VIRIDIS[i + 1]);
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(",") + ")";
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function text(parent, x, y, s, attrs) {
    var node = el("text", attrs || {}, parent);
    node.setAttribute("x", x); node.setAttribute("y", y);
    node.textContent = s;
    return node;
  }

  function fmt(axis, v) {
    if (v === null || v === undefined) { return "–"; }
    if (axis.categories) { return axis.categories[v]; }
    if (Number.isInteger(v) && Math.abs(v) < 1e6) { return String(v); }
    return Number(v).toPrecision(4).replace(/(\.\d*?)0+(?=e|$)/, "$1").replace(/\.(?=e|$)/, "");
  }

  function View(data) {
    this.d = data;
    this.n = data.trials.length;
    this.brushes = {};  // axis index -> [lo, hi] in positions
    this.shown = [];    // row indices inside every brush
    this.plot = document.getElementById("parcoords-plot");
    this.count = document.getElementById("parcoords-count");
    this.bins = [];     // per row: its colour bin
    var c = data.pos[data.color];
    for (var r = 0; r < this.n; r++) { this.bins.push(c[r] === null ? 0 : Math.round(c[r] * (BINS - 1))); }
  }

  View.prototype.layout = function () {
    var plot = this.plot, axes = this.d.axes;
    while (plot.firstChild) { plot.removeChild(plot.firstChild); }
    this.W = Math.max(plot.clientWidth || 0, 480);
    this.H = plot.clientHeight || 440;
    var dpr = window.devicePixelRatio || 1;
    this.canvas = document.createElement("canvas");
    this.canvas.width = Math.round(this.W * dpr); this.canvas.height = Math.round(this.H * dpr);
    this.canvas.style.width = this.W + "px"; this.canvas.style.height = this.H + "px";
    this.ctx = this.canvas.getContext("2d");
    this.ctx.scale(dpr, dpr);
    plot.appendChild(this.canvas);
    this.svg = el("svg", { width: this.W, height: this.H }, plot);
    this.step = (this.W - M.left - M.right) / Math.max(axes.length - 1, 1);
    el("rect", { x: 0, y: 0, width: this.W, height: this.H, fill: "transparent" }, this.svg);
    this.hover = el("path", { fill: "none", stroke: "#000", "stroke-width": 2.5, "pointer-events": "none", visibility: "hidden" }, this.svg);
    this.brushRects = [];
    for (var j = 0; j < axes.length; j++) { this.drawAxis(j); }
    this.tip = document.createElement("div");
    this.tip.className = "pc-tip"; this.tip.hidden = true;
    plot.appendChild(this.tip);
    this.svg.addEventListener("mousemove", guard(this.onHover.bind(this)));
    this.svg.addEventListener("mouseleave", guard(this.hideHover.bind(this)));
  };

  View.prototype.x = function (j) { return M.left + j * this.step; };
  View.prototype.y = function (p) { return M.top + (1 - p) * (this.H - M.top - M.bottom); };
  View.prototype.p = function (y) { return Math.max(0, Math.min(1, 1 - (y - M.top) / (this.H - M.top - M.bottom))); };

  View.prototype.drawAxis = function (j) {
    var axis = this.d.axes[j], x = this.x(j), g = el("g", { "data-axis": axis.key }, this.svg), last = -1e9;
    if (j === this.d.axes.length - this.d.n_fit_axes) {  // a gap before the fit axes
      el("line", { x1: x - this.step / 2, x2: x - this.step / 2, y1: M.top - 6, y2: this.H - M.bottom, stroke: "#ddd", "stroke-dasharray": "3,3" }, g);
    }
    el("line", { x1: x, x2: x, y1: this.y(0), y2: this.y(1), stroke: "#444" }, g);
    var label = text(g, x, 14, axis.label, { "text-anchor": j === 0 ? "start" : "middle", "class": "pc-label" });
    el("title", {}, label).textContent = axis.key + (axis.scale === "log" ? " (log scale)" : "");
    if (axis.scale === "log") { text(g, x, 28, "log", { "text-anchor": j === 0 ? "start" : "middle", fill: "#666" }); }
    var ticks = axis.ticks.slice().sort(function (a, b) { return a[0] - b[0]; });
    for (var i = 0; i < ticks.length; i++) {
      var y = this.y(ticks[i][0]);
      el("line", { x1: x - 3, x2: x, y1: y, y2: y, stroke: "#444" }, g);
      if (Math.abs(y - last) < 12) { continue; }  // thin crowded labels; every tick keeps its mark
      var s = String(ticks[i][1]), t = text(g, x + 5, y + 4, s.length > 22 ? s.slice(0, 21) + "…" : s);
      el("title", {}, t).textContent = s;
      last = y;
    }
    this.brushRects[j] = el("rect", { x: x - 8, width: 16, y: 0, height: 0, fill: "rgba(0,114,178,0.18)", stroke: "#0072b2", visibility: "hidden", "pointer-events": "none" }, g);
    // the hit area overhangs both ends, so a drag can start beyond the extreme values
    var hit = el("rect", { x: x - 12, width: 24, y: this.y(1) - 10, height: this.y(0) - this.y(1) + 20, fill: "transparent", cursor: "crosshair", "class": "pc-hit", "data-axis": axis.key }, g);
    hit.addEventListener("mousedown", guard(this.startBrush.bind(this, j)));
  };

  View.prototype.startBrush = function (j, e) {
    e.preventDefault();
    var self = this, top = this.svg.getBoundingClientRect().top, y0 = e.clientY - top, moved = false;
    var move = guard(function (ev) {
      var y1 = ev.clientY - top;
      if (!moved && Math.abs(y1 - y0) < 3) { return; }
      moved = true;
      self.brushes[j] = [self.p(Math.max(y0, y1)), self.p(Math.min(y0, y1))];
      self.update();
    });
    var up = guard(function () {
      document.removeEventListener("mousemove", move);
      document.removeEventListener("mouseup", up);
      if (!moved) { delete self.brushes[j]; self.update(); }  // a click clears this axis
    });
    document.addEventListener("mousemove", move);
    document.addEventListener("mouseup", up);
  };

  View.prototype.select = function () {
    var keys = Object.keys(this.brushes), pos = this.d.pos, shown = [];
    for (var r = 0; r < this.n; r++) {
      var keep = true;
      for (var k = 0; k < keys.length && keep; k++) {
        var b = this.brushes[keys[k]], v = pos[keys[k]][r];
        keep = v !== null && v >= b[0] - 1e-9 && v <= b[1] + 1e-9;
      }
      if (keep) { shown.push(r); }
    }
    this.shown = shown;
  };

  // Selection, count and marker at once (the tests read them right after an event); the canvas
  // on the next frame, so a drag redraws at most once per frame.
  View.prototype.update = function () {
    this.select();
    for (var j = 0; j < this.brushRects.length; j++) {
      var b = this.brushes[j], rect = this.brushRects[j];
      rect.setAttribute("visibility", b ? "visible" : "hidden");
      if (b) { rect.setAttribute("y", this.y(b[1])); rect.setAttribute("height", Math.max(this.y(b[0]) - this.y(b[1]), 1)); }
    }
    this.count.textContent = this.shown.length + " of " + this.n + " trials shown";
    marker.setAttribute("data-shown", String(this.shown.length));
    marker.setAttribute("data-brushes", String(Object.keys(this.brushes).length));
    this.hideHover();
    var self = this;
    if (!this.pending) {
      this.pending = true;
      (window.requestAnimationFrame || setTimeout)(guard(function () { self.pending = false; self.draw(); }));
    }
  };

  // where row r is drawn on axis j: its position, fanned out within its category
  View.prototype.at = function (j, r) {
    var v = this.d.pos[j][r], s = this.d.spread[j];
    return v === null ? null : v + (s ? s[r] : 0);
  };

  View.prototype.trace = function (ctx, r) {
    var pen = false;
    for (var j = 0; j < this.d.pos.length; j++) {
      var v = this.at(j, r);
      if (v === null) { pen = false; continue; }  // a missing value breaks the line
      if (pen) { ctx.lineTo(this.x(j), this.y(v)); } else { ctx.moveTo(this.x(j), this.y(v)); pen = true; }
    }
  };

  View.prototype.draw = function () {
    var ctx = this.ctx, many = this.n > 300, inside = {}, i, b;
    ctx.clearRect(0, 0, this.W, this.H);
    ctx.lineWidth = many ? 1 : 1.8;
    ctx.lineJoin = "round";
    for (i = 0; i < this.shown.length; i++) { inside[this.shown[i]] = true; }
    if (this.shown.length < this.n) {  // the brushed-out lines, faint, behind
      ctx.beginPath();
      for (i = 0; i < this.n; i++) { if (!inside[i]) { this.trace(ctx, i); } }
      ctx.strokeStyle = "rgba(150,150,150,0.22)"; ctx.stroke();
    }
    ctx.globalAlpha = many ? 0.55 : 0.9;
    // rows are ordered worst first: drawing bins from the worst TV keeps the best on top
    for (b = BINS - 1; b >= 0; b--) {
      ctx.beginPath();
      for (i = 0; i < this.shown.length; i++) { if (this.bins[this.shown[i]] === b) { this.trace(ctx, this.shown[i]); } }
      ctx.strokeStyle = colour(b / (BINS - 1)); ctx.stroke();
    }
    ctx.globalAlpha = 1;
  };

  View.prototype.nearest = function (mx, my) {
    var j = Math.max(0, Math.min(this.d.axes.length - 2, Math.floor((mx - M.left) / this.step)));
    var t = Math.max(0, Math.min(1, (mx - this.x(j)) / this.step)), best = -1, bestD = 8;
    var k = Math.min(j + 1, this.d.axes.length - 1);
    for (var i = 0; i < this.shown.length; i++) {
      var r = this.shown[i], a = this.at(j, r), b = this.at(k, r);
      if (a === null || b === null) { continue; }
      var d = Math.abs(this.y(a + t * (b - a)) - my);
      if (d < bestD) { bestD = d; best = r; }
    }
    return best;
  };

  View.prototype.onHover = function (e) {
    var box = this.svg.getBoundingClientRect(), mx = e.clientX - box.left, my = e.clientY - box.top;
    var r = this.nearest(mx, my);
    if (r < 0) { this.hideHover(); return; }
    var d = [];
    for (var j = 0; j < this.d.pos.length; j++) { var v = this.at(j, r); if (v !== null) { d.push((d.length ? "L" : "M") + this.x(j) + "," + this.y(v)); } }
    this.hover.setAttribute("d", d.join(""));
    this.hover.setAttribute("visibility", "visible");
    this.fillTip(r);
    this.tip.hidden = false;
    var left = mx + 14, w = this.tip.offsetWidth, h = this.tip.offsetHeight;
    this.tip.style.left = (left + w > this.W ? mx - w - 14 : left) + "px";
    this.tip.style.top = Math.max(0, Math.min(my + 10, this.H - h)) + "px";
  };

  View.prototype.fillTip = function (r) {
    var tip = this.tip, table = document.createElement("table"), d = this.d;
    while (tip.firstChild) { tip.removeChild(tip.firstChild); }
    var rows = [["trial", d.trials[r] + (d.status.length && d.status[r] !== "TERMINATED" ? " (" + d.status[r] + ")" : "")]];
    for (var j = 0; j < d.axes.length; j++) { rows.push([d.axes[j].label, fmt(d.axes[j], d.values[j][r])]); }
    for (var i = 0; i < rows.length; i++) {
      var tr = table.insertRow(), th = document.createElement("th"), td = tr.insertCell();
      th.textContent = rows[i][0]; td.textContent = rows[i][1];
      tr.insertBefore(th, td);
    }
    tip.appendChild(table);
    tip.setAttribute("data-trial", d.trials[r]);
  };

  View.prototype.hideHover = function () {
    if (this.hover) { this.hover.setAttribute("visibility", "hidden"); this.tip.hidden = true; }
  };

  function legend(data) {
    var svg = document.getElementById("parcoords-legend"), axis = data.axes[data.color];
    var grad = el("linearGradient", { id: "parcoords-grad" }, el("defs", {}, svg));
    for (var i = 0; i < BINS; i++) { el("stop", { offset: (i / (BINS - 1)).toFixed(3), "stop-color": colour(i / (BINS - 1)) }, grad); }
    text(svg, 0, 12, "colour: " + axis.label + (axis.scale === "log" ? " (log)" : ""));
    el("rect", { x: 150, y: 3, width: 140, height: 10, fill: "url(#parcoords-grad)" }, svg);
    var ticks = [axis.ticks[0], axis.ticks[axis.ticks.length - 1]];
    if (axis.ends) { ticks = [[0, axis.ends[0]], [1, axis.ends[1]]]; }
    text(svg, 150, 28, ticks[0][1], { "font-size": 11 });
    text(svg, 290, 28, ticks[1][1], { "font-size": 11, "text-anchor": "end" });
  }

  function init() {
    var data = JSON.parse(document.getElementById("parcoords-data").textContent);
    var view = new View(data);
    view.layout();
    view.update();
    view.draw();
    legend(data);
    document.getElementById("parcoords-clear").addEventListener("click", guard(function () { view.brushes = {}; view.update(); }));
    var timer = null;
    window.addEventListener("resize", guard(function () {
      clearTimeout(timer);
      timer = setTimeout(guard(function () { view.layout(); view.update(); }), 150);
    }));
    marker.setAttribute("data-lines", String(data.trials.length));
    marker.setAttribute("data-axes", data.axes.map(function (a) { return a.key; }).join("|"));
    marker.setAttribute("data-status", "ok");
  }

  try { init(); } catch (err) { fail(err); }
})();
