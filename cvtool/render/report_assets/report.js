// cvtool report: builds the page from the JSON in #cv-data. Every string from the records goes in
// through textContent or a DOM property (never innerHTML), and only the cards in view are rendered.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("cv-data").textContent);
  var R = D.records;
  var CARD_W = 340, GAP = 10, PIC_W = 320, PIC_H = 200;
  // Every card has the same height (what the virtual grid needs): enough for the tallest kind present.
  var EXTRA = { classify: 90, detect: 24, segment: 76, depth: 40, caption: 60, visualize: 36, attack: 0 };
  var CARD_H = 250 + R.reduce(function (m, r) { return Math.max(m, r.task in EXTRA ? EXTRA[r.task] : 90); }, 24);
  var state = { thr: 0, hidden: {}, label: "", minScore: 0, failedOnly: false, text: "", sort: "input" };
  var shown = R.slice();

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function child(parent, e) { parent.appendChild(e); return e; }
  function fmt(x, nd) { return (x === null || x === undefined) ? "–" : Number(x).toFixed(nd === undefined ? 3 : nd); }
  function hue(s) {
    var h = 0;
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return "hsl(" + Math.round((h % 1000) * 137.508) % 360 + ",80%,45%)";
  }
  function name(r) { return r.src + (r.frame !== undefined ? " #" + r.frame : ""); }

  // ---------------------------------------------------------------- header and summary
  var header = add(el("header"), el("h1", null, D.title),
    el("div", "muted", D.summary.records + " records, generated " + D.generated));
  document.body.appendChild(header);
  var sum = el("div", "section summary");
  document.body.appendChild(sum);

  function kvPanel(title, rows) {
    var p = add(el("div", "panel"), el("h2", null, title));
    var kv = child(p, el("div", "kv"));
    rows.forEach(function (row) { add(kv, el("div", "k", row[0]), el("div", "v", row[1])); });
    return p;
  }
  function joinCounts(list) {
    if (!list || !list.length) return "–";
    return list.map(function (kv) { return list.length > 1 ? kv[0] + " (" + kv[1] + ")" : kv[0]; }).join(", ");
  }
  var S = D.summary;
  var runRows = [["task", joinCounts(S.task)], ["model", joinCounts(S.model)], ["backend", joinCounts(S.backend)],
    ["provider", joinCounts(S.provider)], ["device", joinCounts(S.device)], ["pictures", String(S.ok)],
    ["failures", String(S.failed)]];
  if (S.videos) runRows.push(["videos", String(S.videos)]);
  if (S.throughput) runRows.push(["throughput", S.throughput]);
  if (D.thumbsSkipped) runRows.push(["thumbnails", D.thumbsSkipped + " pictures not embedded (page size budget); they are linked"]);
  if (R.length || !D.runs.length) {
    var summaryPanel = kvPanel("Run", runRows);
    summaryPanel.id = "summary";
    add(sum, summaryPanel);
  }

  function histPanel(title, rows, id) {
    var p = add(el("div", "panel"), el("h2", null, title));
    p.id = id;
    var h = child(p, el("div", "hist"));
    var max = Math.max.apply(null, rows.map(function (r) { return r[1]; }).concat([1]));
    rows.forEach(function (r) {
      var bar = el("div", "bar");
      bar.style.width = (100 * r[1] / max) + "%";
      var n = el("div", "name", r[0]);
      n.title = r[0];
      add(h, n, add(el("div"), bar), el("div", null, r[1]));
    });
    if (!rows.length) add(p, el("div", "muted", "nothing to count"));
    return p;
  }
  if (D.labelHist.length) add(sum, histPanel("Labels (top 15 of " + D.labelHist.length + ")", D.labelHist.slice(0, 15), "label-hist"));
  if (D.scoreHist.some(function (x) { return x > 0; }))
    add(sum, histPanel("Scores", D.scoreHist.map(function (n, i) { return [(i / 10).toFixed(1) + "–" + ((i + 1) / 10).toFixed(1), n]; }), "score-hist"));

  var failed = R.filter(function (r) { return !r.ok; });
  if (failed.length || D.problems.length) {
    var fp = add(el("div", "panel"), el("h2", null, "Failures (" + failed.length + ")"));
    fp.id = "failures";
    var wrap = child(fp, el("div", "failures-wrap"));
    var t = child(wrap, el("table", "failures"));
    add(t, add(el("tr"), el("th", null, "input"), el("th", null, "reason")));
    failed.slice(0, 2000).forEach(function (r) {
      var tr = child(t, el("tr"));
      add(tr, el("td", "input", name(r)), el("td", "reason", r.err));
      tr.addEventListener("click", function () { jumpTo(r.i); });
    });
    if (failed.length > 2000) add(fp, el("div", "muted", (failed.length - 2000) + " more: use the 'failures only' filter"));
    D.problems.forEach(function (p) { add(fp, el("div", "muted small", p)); });
    add(sum, fp);
  }

  // ---------------------------------------------------------------- training runs
  function lineChart(title, series, w, h) {
    var c = el("canvas");
    var dpr = window.devicePixelRatio || 1;
    c.width = w * dpr; c.height = h * dpr; c.style.width = w + "px"; c.style.height = h + "px";
    var g = c.getContext("2d");
    g.scale(dpr, dpr);
    var xs = [], ys = [];
    series.forEach(function (s) { s.pts.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    if (!xs.length) return c;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys.concat([0])), y1 = Math.max.apply(null, ys);
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) y1 = y0 + 1;
    var L = 40, B = 20, T = 16, Rr = 8;
    function X(x) { return L + (x - x0) / (x1 - x0) * (w - L - Rr); }
    function Y(y) { return h - B - (y - y0) / (y1 - y0) * (h - B - T); }
    g.strokeStyle = "#999"; g.fillStyle = "#333"; g.font = "11px sans-serif";
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, h - B); g.lineTo(w - Rr, h - B); g.stroke();
    g.fillText(title, L, 11);
    g.fillText(y1.toPrecision(3), 2, T + 4); g.fillText(y0.toPrecision(3), 2, h - B);
    g.fillText("epoch " + x0, L, h - 5); g.fillText(String(x1), w - Rr - 20, h - 5);
    var lx = L + 120;
    series.forEach(function (s) {
      g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      s.pts.forEach(function (p, i) { if (i) g.lineTo(X(p[0]), Y(p[1])); else g.moveTo(X(p[0]), Y(p[1])); });
      g.stroke();
      g.fillStyle = s.color; g.fillText(s.name, lx, 11); lx += g.measureText(s.name).width + 14;
    });
    return c;
  }
  D.runs.forEach(function (run, k) {
    var sec = el("div", "section run");
    sec.id = "run-" + k;
    add(sec, el("h2", null, "Training run " + run.name));
    var cfg = Object.keys(run.config || {}).filter(function (key) { return run.config[key] !== null; }).map(function (key) { return key + " " + run.config[key]; }).join(" · ");
    add(sec, el("div", "muted", cfg + (run.best_epoch ? " · best epoch " + run.best_epoch : "")));
    var m = run.metrics || [];
    function pts(key) {
      return m.filter(function (r) { return typeof r[key] === "number"; }).map(function (r) { return [r.epoch, r[key]]; });
    }
    var charts = child(sec, el("div", "summary"));
    add(charts, add(el("div", "panel"), lineChart("loss", [{ name: "train", color: "#2060c0", pts: pts("train_loss") },
      { name: "val", color: "#d0601a", pts: pts("val_loss") }], 420, 200)));
    add(charts, add(el("div", "panel"), lineChart("accuracy", [{ name: "train", color: "#2060c0", pts: pts("train_acc") },
      { name: "val", color: "#d0601a", pts: pts("val_acc") }], 420, 200)));
    Object.keys(run.evals || {}).forEach(function (split) {
      var ev = run.evals[split];
      var p = add(el("div", "panel"), el("h2", null, split + ": accuracy " + fmt(ev.accuracy) + ", macro F1 " + fmt(ev.macro_f1) + " on " + ev.images + " pictures"));
      var names = (ev.per_class || []).map(function (c) { return String(c["class"]); });
      if (ev.confusion) {
        var cm = child(p, el("table", "confusion"));
        var hr = add(el("tr"), el("th", null, "true \\ predicted"));
        cm.appendChild(hr);
        names.forEach(function (n) { add(hr, el("th", null, n)); });
        var max = 1;
        ev.confusion.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
        ev.confusion.forEach(function (row, i) {
          var tr = add(el("tr"), el("th", null, names[i] !== undefined ? names[i] : i));
          cm.appendChild(tr);
          row.forEach(function (v, j) {
            var td = child(tr, el("td", null, v));
            var a = v / max;
            td.style.background = i === j ? "rgba(27,127,59," + a + ")" : "rgba(179,38,30," + a + ")";
            if (a > 0.55) td.style.color = "#fff";
          });
        });
      }
      if (ev.per_class) {
        var pc = child(p, el("table", "per-class"));
        add(pc, add(el("tr"), el("th", null, "class"), el("th", null, "precision"), el("th", null, "recall"), el("th", null, "F1"), el("th", null, "support")));
        ev.per_class.forEach(function (c) {
          add(pc, add(el("tr"), el("td", null, c["class"]), el("td", null, fmt(c.precision)), el("td", null, fmt(c.recall)), el("td", null, fmt(c.f1)), el("td", null, c.support)));
        });
      }
      add(charts, p);
    });
    document.body.appendChild(sec);
  });

  // ---------------------------------------------------------------- video timeline
  var videos = {};
  R.forEach(function (r) { if (r.frame !== undefined) (videos[r.src] = videos[r.src] || []).push(r); });
  Object.keys(videos).forEach(function (src) {
    var frames = videos[src];
    var sec = add(el("div", "section timeline"), el("h2", null, "Timeline: " + src + " (" + frames.length + " frames)"));
    var c = el("canvas");
    add(sec, c);
    var legend = child(sec, el("div", "toggles"));
    document.body.appendChild(sec);
    var maxF = frames.reduce(function (m, r) { return Math.max(m, r.frame); }, 1);
    var seen = {};
    function draw() {
      var w = c.clientWidth || 800, h = 48, dpr = window.devicePixelRatio || 1;
      c.width = w * dpr; c.height = h * dpr;
      var g = c.getContext("2d");
      g.scale(dpr, dpr);
      var bw = Math.max(2, Math.min(12, 0.8 * w / frames.length));
      frames.forEach(function (r) {
        var x = r.frame / maxF * (w - bw);
        if (!r.ok) { g.fillStyle = "#b3261e"; g.fillRect(x, 0, bw, h); return; }
        var labs = r.labels || [];
        if (!labs.length) { g.fillStyle = "#d9dee3"; g.fillRect(x, h - 6, bw, 6); }
        labs.forEach(function (lab, k) {
          seen[lab] = 1;
          g.fillStyle = hue(lab);
          var bh = h / Math.max(labs.length, 1);
          g.fillRect(x, k * bh, bw, bh);
        });
      });
    }
    draw();
    add(legend, el("span", "muted", "grey: nothing found, red: failed; click a frame to see its card"));
    Object.keys(seen).sort().forEach(function (lab) {
      var s = el("span", "swatch"); s.style.background = hue(lab);
      add(legend, add(el("span"), s, document.createTextNode(lab)));
    });
    function at(ev) {
      var rect = c.getBoundingClientRect();
      var f = (ev.clientX - rect.left) / rect.width * maxF, best = frames[0];
      frames.forEach(function (r) { if (Math.abs(r.frame - f) < Math.abs(best.frame - f)) best = r; });
      return best;
    }
    c.addEventListener("mousemove", function (ev) {
      var r = at(ev);
      c.title = "frame " + r.frame + (r.ts !== undefined ? " (" + r.ts + " s)" : "") + ": " + (r.ok ? (r.labels || []).join(", ") || "nothing" : r.err);
    });
    c.addEventListener("click", function (ev) { jumpTo(at(ev).i); });
  });

  // ---------------------------------------------------------------- controls
  var hasRecords = R.length > 0;
  var controls = el("div", "controls");
  var labelsAll = D.labelHist.map(function (kv) { return kv[0]; }).sort();
  var boxLabels = {};
  R.forEach(function (r) { if (r.v && r.v.boxes) r.v.boxes.forEach(function (b) { boxLabels[b[5]] = 1; }); });
  var hasBoxes = Object.keys(boxLabels).length > 0;

  var search = el("input"); search.type = "search"; search.placeholder = "file name contains"; search.id = "f-text";
  var labelSel = el("select"); labelSel.id = "f-label";
  function option(sel, value, text) { var o = el("option", null, text); o.value = value; sel.appendChild(o); }
  option(labelSel, "", "all labels");
  labelsAll.forEach(function (l) { option(labelSel, l, l); });
  var minS = el("input"); minS.type = "range"; minS.min = 0; minS.max = 1; minS.step = 0.01; minS.value = 0; minS.id = "f-score";
  var minSv = el("span", "small", "0.00");
  var failOnly = el("input"); failOnly.type = "checkbox"; failOnly.id = "f-failed";
  var sortSel = el("select"); sortSel.id = "f-sort";
  [["input", "input order"], ["name", "name"], ["score-desc", "score, high first"], ["score-asc", "score, low first"]].forEach(function (o) {
    option(sortSel, o[0], o[1]);
  });
  var count = el("span", "muted"); count.id = "shown-count";
  if (hasRecords) {
    add(controls, search,
      add(el("label"), document.createTextNode("label "), labelSel),
      add(el("label"), document.createTextNode("score ≥ "), minS, minSv),
      add(el("label"), failOnly, document.createTextNode(" failures only")),
      add(el("label"), document.createTextNode("sort "), sortSel));
  }
  var thr, thrV, toggles;
  if (hasBoxes) {
    thr = el("input"); thr.type = "range"; thr.min = 0; thr.max = 1; thr.step = 0.01; thr.value = 0; thr.id = "box-thr";
    thrV = el("span", "small", "0.00");
    add(controls, add(el("label"), document.createTextNode("box score ≥ "), thr, thrV));
    toggles = el("div", "toggles"); toggles.id = "class-toggles";
    Object.keys(boxLabels).sort().forEach(function (lab) {
      var cb = el("input"); cb.type = "checkbox"; cb.checked = true; cb.dataset.label = lab;
      var sw = el("span", "swatch"); sw.style.background = hue(lab);
      cb.addEventListener("change", function () { if (cb.checked) delete state.hidden[lab]; else state.hidden[lab] = 1; render(true); });
      add(toggles, add(el("label"), cb, sw, document.createTextNode(lab)));
    });
    add(controls, toggles);
  }
  if (hasRecords) {
    add(controls, count);
    document.body.appendChild(controls);
  }
  var grid = el("div"); grid.id = "grid";
  document.body.appendChild(grid);

  function apply() {
    var t = state.text.toLowerCase();
    shown = R.filter(function (r) {
      if (state.failedOnly && r.ok) return false;
      if (t && r.src.toLowerCase().indexOf(t) < 0) return false;
      if (state.label && !(r.labels && r.labels.indexOf(state.label) >= 0)) return false;
      if (state.minScore > 0 && !(r.score >= state.minScore)) return false;
      return true;
    });
    var s = state.sort;
    if (s === "name") shown.sort(function (a, b) { return a.src < b.src ? -1 : a.src > b.src ? 1 : (a.frame || 0) - (b.frame || 0); });
    else if (s === "score-desc" || s === "score-asc") {
      var sign = s === "score-desc" ? -1 : 1;
      shown.sort(function (a, b) {
        var x = a.score === undefined ? null : a.score, y = b.score === undefined ? null : b.score;
        if (x === null && y === null) return a.i - b.i;
        if (x === null) return 1;
        if (y === null) return -1;
        return sign * (x - y) || a.i - b.i;
      });
    }
    count.textContent = shown.length + " of " + R.length + " records";
    count.dataset.shown = shown.length;
    render(true);
  }
  search.addEventListener("input", function () { state.text = search.value; apply(); });
  labelSel.addEventListener("change", function () { state.label = labelSel.value; apply(); });
  minS.addEventListener("input", function () { state.minScore = +minS.value; minSv.textContent = (+minS.value).toFixed(2); apply(); });
  failOnly.addEventListener("change", function () { state.failedOnly = failOnly.checked; apply(); });
  sortSel.addEventListener("change", function () { state.sort = sortSel.value; apply(); });
  if (thr) thr.addEventListener("input", function () { state.thr = +thr.value; thrV.textContent = (+thr.value).toFixed(2); render(true); });

  // ---------------------------------------------------------------- cards
  function picBox(w, h) {
    var s = Math.min(PIC_W / w, PIC_H / h);
    return [Math.max(1, Math.round(w * s)), Math.max(1, Math.round(h * s))];
  }
  function img(uri, alt) { var i = el("img"); i.src = uri; i.alt = alt || ""; i.decoding = "async"; return i; }
  function bars(rows, cls) {
    var b = el("div", "bars " + (cls || ""));
    rows.forEach(function (r) {
      var bar = el("div", "bar");
      bar.style.width = Math.max(0, Math.min(1, r[1] || 0)) * 100 + "%";
      var n = el("div", "name", r[0]); n.title = r[0];
      add(b, n, add(el("div"), bar), el("div", "small", fmt(r[1])));
    });
    return b;
  }
  function mainPicture(r, v, wmax) {
    var w = r.w || 4, h = r.h || 3, sz = picBox(w, h);
    if (wmax && sz[0] > wmax) { sz = [wmax, Math.round(sz[1] * wmax / sz[0])]; }
    var p = el("div", "pic");
    p.style.width = sz[0] + "px"; p.style.height = sz[1] + "px";
    if (r.t !== undefined) add(p, img(D.thumbs[r.t], r.src));
    else {
      p.className = "pic nopic";
      p.textContent = r.href ? "picture not embedded (link above)" : "no picture";
    }
    if (v && v.overlay !== undefined && v.overlay !== null) {
      var o = img(D.thumbs[v.overlay], "mask"); o.className = "overlay";
      o.style.width = sz[0] + "px"; o.style.height = sz[1] + "px";
      add(p, o);
    }
    if (v && v.boxes && r.w && r.h) {
      var nShown = 0;
      v.boxes.forEach(function (b) {
        var d = el("div", "box");
        var col = hue(b[5]);
        d.style.left = (b[0] / r.w * 100) + "%"; d.style.top = (b[1] / r.h * 100) + "%";
        d.style.width = ((b[2] - b[0]) / r.w * 100) + "%"; d.style.height = ((b[3] - b[1]) / r.h * 100) + "%";
        d.style.borderColor = col;
        d.dataset.score = b[4]; d.dataset.label = b[5];
        d.title = b[5] + " " + fmt(b[4]);
        var tag = el("span", "tag", b[5] + " " + fmt(b[4], 2)); tag.style.background = col;
        add(d, tag);
        var vis = b[4] >= state.thr && !state.hidden[b[5]];
        d.style.display = vis ? "" : "none";
        if (vis) nShown++;
        add(p, d);
      });
      p.dataset.boxesShown = nShown;
    }
    return p;
  }
  function sidePic(uri, label, w) {
    var p = el("div", "pic"); p.style.width = w + "px";
    var i = img(uri, label); i.style.height = "auto";
    add(p, i, el("span", "cap", label));
    return p;
  }
  function card(r) {
    var c = el("div", "card" + (r.ok ? "" : " failed"));
    c.dataset.i = r.i;
    var t = el("div", "title");
    if (r.href) { var a = el("a", null, name(r)); a.href = r.href; a.target = "_blank"; a.rel = "noopener noreferrer"; add(t, a); }
    else t.textContent = name(r);
    t.title = name(r);
    add(c, t);
    var v = r.v || {};
    if (!r.ok) add(c, el("div", "error", r.err));
    if (r.task === "attack") {
      var row = child(c, el("div", "pics"));
      (v.side || []).forEach(function (s) { if (s[1] !== null) add(row, sidePic(D.thumbs[s[1]], s[0], 104)); });
      if (!(v.side || []).length) add(row, mainPicture(r, null));
      if (v.clean) {
        add(c, add(el("div", "small"), el("span", "badge " + (v.success ? "bad" : "ok"), v.success ? "label changed" : "label kept"),
          document.createTextNode(v.method || "")));
        add(c, bars([["clean: " + v.clean[0], v.clean[1]], ["adversarial: " + v.adv[0], v.adv[1]]]));
      }
      return c;
    }
    if ((v.side && v.side.length) || v.heat !== undefined) {
      var row2 = child(c, el("div", "pics"));
      add(row2, mainPicture(r, v, 158));
      if (v.heat !== undefined) add(row2, sidePic(D.thumbs[v.heat], "heat map", 158));
      (v.side || []).forEach(function (s) { if (s[1] !== null) add(row2, sidePic(D.thumbs[s[1]], s[0], 158)); });
    } else add(c, mainPicture(r, v));
    if (v.topk) add(c, bars(v.topk.slice(0, 5), "topk"));
    if (v.boxes) {
      var n = v.boxes.filter(function (b) { return b[4] >= state.thr && !state.hidden[b[5]]; }).length;
      add(c, el("div", "small muted", n + " of " + v.boxes.length + " boxes shown"));
    }
    if (v.shares) add(c, bars(v.shares.slice(0, 4), "shares"));
    if (v.caption !== undefined) {
      var cp = el("div", "caption");
      if (v.kind === "labels") add(cp, el("span", "badge", "from labels, not a neural caption"));
      add(cp, document.createTextNode(v.caption));
      add(c, cp);
    }
    if (v.depth) add(c, el("div", "small muted", "relative inverse depth (larger = nearer): min " + fmt(v.depth.min) + ", median " + fmt(v.depth.median) + ", max " + fmt(v.depth.max)));
    if (v.method && r.task === "visualize") add(c, el("div", "small", v.method + (v.pred ? ": predicted " + v.pred[0] + " " + fmt(v.pred[1]) : "") + (v.target && v.pred && v.target[0] !== v.pred[0] ? ", target " + v.target[0] : "")));
    return c;
  }

  // ---------------------------------------------------------------- virtual grid
  var cols = 1, rendered = {}, lastRange = "";
  function layout() {
    cols = Math.max(1, Math.floor((grid.clientWidth + GAP) / (CARD_W + GAP)));
    grid.style.height = Math.ceil(shown.length / cols) * (CARD_H + GAP) + "px";
  }
  function render(force) {
    layout();
    var top = grid.getBoundingClientRect().top + window.scrollY;
    var y0 = window.scrollY - top, y1 = y0 + window.innerHeight;
    var r0 = Math.max(0, Math.floor(y0 / (CARD_H + GAP)) - 2), r1 = Math.max(0, Math.ceil(y1 / (CARD_H + GAP)) + 2);
    var a = r0 * cols, b = Math.min(shown.length, r1 * cols);
    var key = a + ":" + b + ":" + cols;
    if (!force && key === lastRange) return;
    lastRange = key;
    var keep = {};
    for (var k = a; k < b; k++) {
      var r = shown[k], id = r.i;
      var c = (!force && rendered[id]) || card(r);
      if (force && rendered[id] && rendered[id] !== c) rendered[id].remove();
      c.style.left = (k % cols) * (CARD_W + GAP) + "px";
      c.style.top = Math.floor(k / cols) * (CARD_H + GAP) + "px";
      c.style.width = CARD_W + "px"; c.style.height = CARD_H + "px";
      if (c.parentNode !== grid) grid.appendChild(c);
      keep[id] = c;
    }
    Object.keys(rendered).forEach(function (id) { if (!keep[id]) rendered[id].remove(); });
    rendered = keep;
  }
  var pending = false;
  function onScroll() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; render(false); });
  }
  window.addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", function () { render(true); });
  function jumpTo(i) {
    var k = -1;
    for (var j = 0; j < shown.length; j++) if (shown[j].i === i) { k = j; break; }
    if (k < 0) { state.failedOnly = false; failOnly.checked = false; state.label = ""; labelSel.value = ""; state.text = ""; search.value = "";
      state.minScore = 0; minS.value = 0; apply(); for (j = 0; j < shown.length; j++) if (shown[j].i === i) { k = j; break; } }
    if (k < 0) return;
    var top = grid.getBoundingClientRect().top + window.scrollY + Math.floor(k / cols) * (CARD_H + GAP) - 80;
    window.scrollTo(0, top);
    render(true);
    if (rendered[i]) rendered[i].classList.add("flash");
  }
  // For tests and scripts: what the page holds, independent of what is on screen.
  window.cvReport = {
    records: R.length,
    shown: function () { return shown.map(function (r) { return r.i; }); },
    visibleBoxes: function () {
      var n = 0;
      shown.forEach(function (r) { if (r.v && r.v.boxes) r.v.boxes.forEach(function (b) { if (b[4] >= state.thr && !state.hidden[b[5]]) n++; }); });
      return n;
    },
    jumpTo: jumpTo
  };
  apply();
})();
