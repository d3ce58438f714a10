// dvis atlas: draws unit pages from <layer>/data.js and runs the index search from site.js.
// Plain browser JavaScript, no libraries, so the site works offline and from file://.
"use strict";
(function () {
  var site = atlas.site;
  // The histogram grid of dvis.unit_stats: magnitude edges POS; bin CENTER is exact zero, bins
  // above it hold [POS[m-1], POS[m]) (m = bin - CENTER - 1, POS[-1] = 0), bins below the negatives.
  var POS = site.hist_edges, CENTER = POS.length + 1;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function fmt(v) { return v === null || v === undefined ? "n/a" : (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(2) : String(+v.toPrecision(3))); }
  function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(v < 0.01 && v > 0 ? 2 : 1) + "%"; }
  function binLow(b) { // lower edge of histogram bin b on the real line
    if (b === CENTER) return 0;
    var m = Math.abs(b - CENTER) - 1;
    return b > CENTER ? (m === 0 ? 0 : POS[m - 1]) : -(m < POS.length ? POS[m] : Infinity);
  }

  // One unit's tile of a sprite as an <img> inside a clipping box (so the image has a natural size).
  function crop(img, unit, size) {
    var h = img.tile[0], w = img.tile[1], scale = size / Math.max(h, w);
    var r = Math.floor(unit / img.cols), c = unit % img.cols;
    var box = el("div", {"class": "crop", style: "width:" + Math.round(w * scale) + "px;height:" + Math.round(h * scale) + "px"});
    box.appendChild(el("img", {src: img.src, alt: "", style: "width:" + Math.round(img.cols * w * scale) + "px;margin-left:-" +
      Math.round(c * w * scale) + "px;margin-top:-" + Math.round(r * h * scale) + "px"}));
    return box;
  }

  function histogram(hist, dead) {
    var lo = hist[0], counts = hist[1], W = 320, H = 100;
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + (H + 16));
    svg.setAttribute("class", "hist" + (dead ? " dead" : ""));
    var top = Math.max.apply(null, counts.concat([1])), bw = W / Math.max(counts.length, 1);
    counts.forEach(function (c, i) {
      var r = document.createElementNS(svg.namespaceURI, "rect"), bh = c / top * H;
      r.setAttribute("x", i * bw); r.setAttribute("width", Math.max(bw - 1, 1));
      r.setAttribute("y", H - bh); r.setAttribute("height", bh);
      r.setAttribute("class", lo + i === CENTER ? "zero" : (lo + i > CENTER ? "pos" : "neg"));
      var t = document.createElementNS(svg.namespaceURI, "title");
      t.textContent = c + " images from " + fmt(binLow(lo + i));
      r.appendChild(t); svg.appendChild(r);
    });
    histAxis(lo, counts.length, W).forEach(function (a) {
      var t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", a.x); t.setAttribute("y", H + 13); t.setAttribute("text-anchor", a.anchor);
      t.textContent = a.text; svg.appendChild(t);
      var tick = document.createElementNS(svg.namespaceURI, "line");
      tick.setAttribute("x1", a.x); tick.setAttribute("x2", a.x); tick.setAttribute("y1", a.zero ? 0 : H);
      tick.setAttribute("y2", H + 3); tick.setAttribute("class", a.zero ? "zero" : "tick"); svg.appendChild(tick);
    });
    return svg;
  }

  // The histogram's axis labels: both ends, the zero bin (a mark across the plot) and up to 3 bins
  // between, each at its bin's lower edge, none closer than 48 px to another. Bins are log-spaced
  // magnitudes, so the labels are values, not a linear scale.
  function histAxis(lo, n, W) {
    var bw = W / Math.max(n, 1), out = [];
    function add(x, text, anchor, zero) {
      if (!zero && out.some(function (a) { return Math.abs(a.x - x) < 48; })) return;
      out.push({x: x, text: text, anchor: anchor, zero: !!zero});
    }
    if (lo <= CENTER && CENTER < lo + n) add((CENTER - lo + 0.5) * bw, "0", "middle", true);
    add(0, fmt(binLow(lo)), "start");
    add(W, fmt(binLow(lo + n)), "end");
    for (var k = 1; k <= 3; k++) {
      var b = Math.round(k * n / 4);
      if (b > 0 && b < n && lo + b !== CENTER) add(b * bw, fmt(binLow(lo + b)), "middle");
    }
    return out.sort(function (a, b) { return a.x - b.x; });
  }

  // The thumbnail of ``unit`` of a layer (its optimized image, else its top-9) as a sprite background,
  // as the layer grids show units (many per list, one image file), or null.
  function thumb(img, unit, size) {
    if (!img || img.present[unit] !== "1") return null;
    var h = img.tile[0], w = img.tile[1], scale = size / Math.max(h, w);
    var r = Math.floor(unit / img.cols), c = unit % img.cols;
    return el("span", {"class": "thumb", style: "width:" + Math.round(w * scale) + "px;height:" + Math.round(h * scale) +
      "px;background:url(" + img.src + ") -" + Math.round(c * w * scale) + "px -" + Math.round(r * h * scale) + "px/" +
      Math.round(img.cols * w * scale) + "px auto no-repeat"});
  }

  function row(name, value) { return el("tr", {}, [el("th", {text: name}), el("td", {text: value})]); }

  function unitPage(body) {
    var layer = atlas.layers[body.dataset.layer], u = +body.dataset.unit, main = document.getElementById("unit");
    main.textContent = "";
    var li = site.layers.findIndex(function (l) { return l.name === layer.name; });
    var nav = el("nav", {}, [el("a", {href: "../index.html", text: "index"}), el("a", {href: "index.html", text: layer.display})]);
    if (u > 0) nav.appendChild(el("a", {href: (u - 1) + ".html", rel: "prev", text: "\u2190 " + (u - 1)}));
    if (u + 1 < layer.units) nav.appendChild(el("a", {href: (u + 1) + ".html", rel: "next", text: (u + 1) + " \u2192"}));
    if (li + 1 < site.layers.length) nav.appendChild(el("a", {href: "../" + site.layers[li + 1].slug + "/index.html", text: site.layers[li + 1].display + " \u21d2"}));
    main.appendChild(nav);
    main.appendChild(el("h1", {text: site.model + " / " + layer.display + ":" + u}));
    var st = layer.stats, flag = st ? st.flag[u] : ".";
    if (flag !== ".") main.appendChild(el("p", {"class": "badge " + (flag === "d" ? "dead" : "rare"), text: flag === "d" ? "dead: never positive on the " + st.n + " images" : "rare: positive on " + pct(st.fimg[u]) + " of images"}));
    var figs = el("div", {"class": "figs"});
    var names = {opt: "optimized (pixel)", opt_fourier: "optimized (fourier)", opt_maco: "optimized (maco)",
      opt_accentuate: "accentuated top-1", top9: "top-9 images", deconv: "deconv of top-9", guided: "guided backprop of top-9", grad: "gradient of top-9"};
    Object.keys(layer.images).forEach(function (kind) {
      var img = layer.images[kind];
      if (img.present[u] !== "1") return;
      figs.appendChild(el("figure", {}, [crop(img, u, kind.indexOf("opt") === 0 ? 192 : 288), el("figcaption", {text: names[kind] || kind})]));
    });
    main.appendChild(figs);
    if (!st) { main.appendChild(el("p", {text: "No unit statistics: `dvis maxes` (or `dvis precompute`) computes them."})); return; }
    var t = el("table", {"class": "stats"}, [
      row("mean / std of the per-image score", fmt(st.mean[u]) + " / " + fmt(st.std[u])),
      row("min / max", fmt(st.min[u]) + " / " + fmt(st.max[u])),
      row("positive on images", pct(st.fimg[u])),
      row("positive on positions", pct(st.fpos[u]))]);
    if (st.sel) t.appendChild(row("class selectivity (Morcos 2018)", fmt(st.sel[u])));
    main.appendChild(el("h2", {text: "statistics over " + st.n + " images"}));
    main.appendChild(t);
    main.appendChild(el("h2", {text: "histogram of the per-image score"}));
    main.appendChild(histogram(st.hist[u], flag === "d"));
    if (st.top) {
      main.appendChild(el("h2", {text: "classes of the top images"}));
      main.appendChild(el("ul", {"class": "classes"}, st.top[u].map(function (c) {
        return el("li", {text: site.classes[c[0]] + " " + pct(c[1])}, [el("span", {"class": "bar", style: "width:" + Math.round(c[1] * 200) + "px"})]);
      })));
    }
    if (st.cmean) {
      main.appendChild(el("h2", {text: "highest class means (rectified score)"}));
      main.appendChild(el("ul", {"class": "classes"}, st.cmean[u].map(function (c) { return el("li", {text: site.classes[c[0]] + " " + fmt(c[1])}); })));
    }
    if (st.corr[u].length) {
      var own = layer.images.opt || layer.images.top9;
      main.appendChild(el("h2", {text: "most correlated units (Pearson r over images)"}));
      main.appendChild(el("ol", {"class": "corr"}, st.corr[u].map(function (c) {
        return el("li", {}, [el("a", {href: c[0] + ".html"}, [thumb(own, c[0], 48), el("span", {text: layer.display + ":" + c[0]})]),
          document.createTextNode(" r = " + c[1].toFixed(2))]);
      })));
    }
    var bottom = layer.bottom;
    if (bottom && bottom.units[u].length) {
      main.appendChild(el("h2", {text: "least-activating images (bottom " + bottom.units[u].length + ", lowest first)"}));
      var k = bottom.sprite ? bottom.sprite.cols : 0;
      main.appendChild(el("div", {"class": "figs bottom"}, bottom.units[u].map(function (b, j) {
        return el("figure", {}, [bottom.sprite ? crop(bottom.sprite, u * k + j, 96) : null,
          el("figcaption", {text: bottom.names[b[0]] + " " + fmt(b[1])})]);
      })));
      if (!bottom.sprite) main.appendChild(el("p", {"class": "small", text: "The images of the maxes run could not be read when the atlas was built: names only."}));
    }
  }

  function search(q) {
    q = q.trim().toLowerCase();
    var out = [];
    if (!q) return out;
    var m = q.match(/^(.+):(\d+)$/);
    site.layers.forEach(function (l, li) {
      var names = [l.name.toLowerCase(), l.display.toLowerCase()];
      if (m && names.indexOf(m[1]) >= 0 && +m[2] < l.units) out.push({href: l.slug + "/" + m[2] + ".html", text: l.display + ":" + m[2], layer: li, unit: +m[2]});
      else if (!m && names.indexOf(q) >= 0) out.push({href: l.slug + "/index.html", text: l.display + " (" + l.units + " units)"});
    });
    if (m) return out;
    var hits = site.index.filter(function (e) { return site.classes[e[2]].toLowerCase().indexOf(q) === 0; });
    hits.sort(function (a, b) { return b[3] - a[3] || (b[4] || 0) - (a[4] || 0); });
    hits.slice(0, 60).forEach(function (e) {
      var l = site.layers[e[0]];
      out.push({href: l.slug + "/" + e[1] + ".html", layer: e[0], unit: e[1], text: l.display + ":" + e[1] + " \u2014 " + site.classes[e[2]] + " " + pct(e[3]) + " of top images" + (e[4] === null ? "" : ", selectivity " + e[4])});
    });
    return out;
  }

  function indexPage() {
    var input = document.getElementById("q"), list = document.getElementById("results");
    function update() {
      list.textContent = "";
      var hits = search(input.value);
      if (input.value.trim() && !hits.length) list.appendChild(el("li", {text: site.index.length ? "no match" : "no match (no class statistics)"}));
      hits.forEach(function (h) {
        var t = h.unit === undefined ? null : thumb(site.layers[h.layer].thumb, h.unit, 40);
        list.appendChild(el("li", {}, [el("a", {href: h.href}, [t, el("span", {text: h.text})])]));
      });
    }
    input.addEventListener("input", update);
    var q = new URLSearchParams(location.search).get("q");
    if (q) { input.value = q; }
    update();
  }

  atlas.search = search;
  var body = document.body;
  if (body.dataset.unit !== undefined) unitPage(body);
  else if (body.dataset.page === "index") indexPage();
})();
