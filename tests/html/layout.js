// Injected into each page by test_render.py: measures, at the viewport Chromium was given, every
// notebook output area, table and display equation against the page's content column, finds
// the profile banners, and leaves a JSON report in the data-report attribute of an element with
// id "gud-layout-report" (read back from Chromium's --dump-dom). No text is added to the page.
(function () {
  "use strict";
  var SELECTORS = [
    ".cell_output", ".cell_output .output", ".cell_output pre", ".cell_output img",
    ".cell_output table", "table", ".pst-scrollable-table-container",
    "div.math", ".math-wrapper", "mjx-container[display='true']",
    "div.highlight pre", "pre",  // code blocks: a cut-off line shows as content wider than its box
  ].join(",");

  function describe(el) {
    var s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    var cls = (el.getAttribute("class") || "").trim().split(/\s+/).filter(function (c) {
      return c && !/^CtxtMenu/.test(c);  // MathJax's menu bookkeeping
    }).slice(0, 3);
    return cls.length ? s + "." + cls.join(".") : s;
  }

  function where(el, cells) {
    var out = {};
    var sec = el.closest("section[id]");
    out.section = sec ? sec.id : "";
    var cell = el.closest(".cell");
    if (cell) {
      out.cell = cells.indexOf(cell) + 1;
      var src = cell.querySelector(".cell_input pre");
      out.source = src ? src.textContent.trim().split("\n")[0].slice(0, 100) : "";
    }
    var text = el.tagName === "IMG" ? (el.getAttribute("alt") || el.getAttribute("src") || "") : el.textContent;
    out.text = (text || "").trim().replace(/\s+/g, " ").slice(0, 100);
    return out;
  }

  function visible(el) {
    var r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return false;
    var st = getComputedStyle(el);
    return st.visibility !== "hidden" && st.display !== "none";
  }

  function measure(stage) {
    var col = document.querySelector("article.bd-article") || document.querySelector("[role=main]") ||
      document.querySelector("main") || document.body;
    var c = col.getBoundingClientRect();
    var cells = Array.prototype.slice.call(document.querySelectorAll(".cell"));
    var found = [];
    document.querySelectorAll(SELECTORS).forEach(function (el) {
      if (!visible(el) || el.closest(".margin, aside, .sidebar, .bd-sidebar-secondary")) return;
      var r = el.getBoundingClientRect();
      var scroll = el.clientWidth > 0 ? el.scrollWidth - el.clientWidth : 0;
      var right = r.right - c.right;
      var left = c.left - r.left;
      var over = Math.max(scroll, right, left);
      if (over > 1) {
        var item = where(el, cells);
        item.el = el;
        item.element = describe(el);
        item.overflow = Math.round(over);
        item.how = scroll >= Math.max(right, left) ?
          "content " + el.scrollWidth + " px wide in a box " + el.clientWidth + " px wide (scrolls or is cut)" :
          "box " + Math.round(r.width) + " px wide reaches " + Math.round(Math.max(right, left)) +
          " px past the content column (" + Math.round(c.left) + "-" + Math.round(c.right) + " px)";
        found.push(item);
      }
    });
    // one line per problem: drop a container whose overflow a descendant explains, then any
    // offender inside another (a table scrolling in its wrapper is the wrapper's problem)
    var specific = found.filter(function (a) {
      return !found.some(function (b) {
        return b !== a && a.el.contains(b.el) && b.overflow >= a.overflow - 1;
      });
    });
    var keep = specific.filter(function (a) {
      return !specific.some(function (b) { return b !== a && b.el.contains(a.el); });
    });
    keep.forEach(function (a) { delete a.el; });
    var banners = Array.prototype.slice.call(document.querySelectorAll(".gud-profile-banner")).map(function (b) {
      return {visible: visible(b), text: b.textContent.trim().replace(/\s+/g, " ").slice(0, 200)};
    });
    // output images as drawn: a large natural/shown ratio means shrunken, maybe illegible text
    var images = Array.prototype.slice.call(document.querySelectorAll(".cell_output img")).filter(visible).map(function (im) {
      var cell = im.closest(".cell");
      return {src: im.getAttribute("src"), natural: [im.naturalWidth, im.naturalHeight],
              shown: [Math.round(im.getBoundingClientRect().width), Math.round(im.getBoundingClientRect().height)],
              cell: cell ? cells.indexOf(cell) + 1 : 0};
    });
    // numbered figures (gud.book): the smallest text as shown, from its size at the figure's
    // natural CSS width (data-min-text-px) scaled by the width it is drawn at
    var figures = Array.prototype.slice.call(document.querySelectorAll("figure.gud-figure img[data-min-text-px]"))
      .filter(visible).map(function (im) {
        var fig = im.closest("figure");
        var shown = im.getBoundingClientRect().width;
        var natural = parseFloat(im.getAttribute("data-css-width"));
        return {id: fig ? fig.id : "", shown: Math.round(shown), natural: natural,
                minTextPx: parseFloat(im.getAttribute("data-min-text-px")) * shown / natural};
      });
    var report = {
      stage: stage,
      innerWidth: window.innerWidth,
      docWidth: document.documentElement.scrollWidth,
      height: document.documentElement.scrollHeight,
      column: {left: Math.round(c.left), right: Math.round(c.right), width: Math.round(c.width), element: describe(col)},
      mathjax: !!document.querySelector("mjx-container"),
      overflow: keep,
      banners: banners,
      images: images,
      figures: figures,
    };
    var out = document.getElementById("gud-layout-report");
    if (!out) {
      out = document.createElement("div");
      out.id = "gud-layout-report";
      out.hidden = true;
      document.body.appendChild(out);
    }
    out.setAttribute("data-report", JSON.stringify(report));
  }

  window.addEventListener("load", function () {
    measure("load");
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) {
      mj.startup.promise.then(function () { measure("mathjax"); });
    }
    setTimeout(function () { measure("final"); }, 3000);  // virtual time: after late layout
  });
})();
