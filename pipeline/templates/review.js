// QA sheet behaviour: filters (also from the URL: #filter=lowconf), map <-> card links, box
// outlines toggle, and a box-drawing helper that prints an extra-blur request command.
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll(".frame-card"));
  var points = Array.prototype.slice.call(document.querySelectorAll("#track .pt"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".filters button"));
  var names = { all: "", lowconf: "with low-confidence detections", "lowconf-face": "with a low-confidence face",
    "lowconf-plate": "with a low-confidence plate", busy: "without detections in a busy area",
    request: "edited by request", vetoed: "where the plate verifier vetoed a candidate", nodata: "without detection data",
    failed: "that failed" };

  function hasFlag(el, f) { return (" " + (el.getAttribute("data-flags") || "") + " ").indexOf(" " + f + " ") >= 0; }

  function applyFilter(f) {
    if (!names.hasOwnProperty(f)) { f = "all"; }
    var visible = 0;
    cards.forEach(function (c) {
      var show = f === "all" || hasFlag(c, f);
      c.hidden = !show;
      if (show) { visible += 1; }
    });
    points.forEach(function (p) {
      var cls = p.getAttribute("class") || "";
      var on = f === "all" || (" " + cls + " ").indexOf(" " + f + " ") >= 0;
      p.setAttribute("class", cls.replace(/ dim/g, "") + (on ? "" : " dim"));
    });
    document.body.classList.toggle("only-failed", f === "failed");
    if (f === "failed") { visible = document.querySelectorAll("#failed tr.failed-row").length; }
    buttons.forEach(function (b) { b.classList.toggle("active", b.getAttribute("data-filter") === f); });
    document.getElementById("visible-count").textContent = String(visible);
    document.getElementById("filter-name").textContent = names[f];
    document.body.setAttribute("data-filter", f);
    document.body.setAttribute("data-visible", String(visible));
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      var f = b.getAttribute("data-filter");
      history.replaceState(null, "", "#filter=" + f);
      applyFilter(f);
    });
  });

  function highlight(id, on) {
    var card = document.getElementById("f-" + id);
    if (card) { card.classList.toggle("hot", on); }
    points.forEach(function (p) {
      if (p.getAttribute("data-frame") === id) {
        var cls = (p.getAttribute("class") || "").replace(/ hot/g, "");
        p.setAttribute("class", cls + (on ? " hot" : ""));
      }
    });
  }
  points.forEach(function (p) {
    var id = p.getAttribute("data-frame");
    p.addEventListener("click", function () {
      var card = document.getElementById("f-" + id);
      if (card) { card.scrollIntoView({ behavior: "smooth", block: "center" }); }
    });
    p.addEventListener("mouseenter", function () { highlight(id, true); });
    p.addEventListener("mouseleave", function () { highlight(id, false); });
  });
  cards.forEach(function (c) {
    var id = c.getAttribute("data-frame");
    c.addEventListener("mouseenter", function () { highlight(id, true); });
    c.addEventListener("mouseleave", function () { highlight(id, false); });
  });

  document.getElementById("show-boxes").addEventListener("change", function (e) {
    document.body.classList.toggle("noboxes", !e.target.checked);
  });

  // Box-drawing helper: pointer position -> image pixels through the overlay's viewBox.
  cards.forEach(function (c) {
    var svg = c.querySelector(".overlay");
    var rect = svg.querySelector(".draw");
    var cmd = c.querySelector(".cmd");
    var w = Number(c.getAttribute("data-width")), h = Number(c.getAttribute("data-height"));
    var start = null;
    function pos(ev) {
      var r = svg.getBoundingClientRect();
      var x = Math.round((ev.clientX - r.left) / r.width * w), y = Math.round((ev.clientY - r.top) / r.height * h);
      return [Math.max(0, Math.min(w, x)), Math.max(0, Math.min(h, y))];
    }
    function box(a, b) { return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]; }
    svg.addEventListener("pointerdown", function (ev) { start = pos(ev); svg.setPointerCapture(ev.pointerId); ev.preventDefault(); });
    svg.addEventListener("pointermove", function (ev) {
      if (!start) { return; }
      var b = box(start, pos(ev));
      rect.setAttribute("x", b[0]); rect.setAttribute("y", b[1]);
      rect.setAttribute("width", b[2] - b[0]); rect.setAttribute("height", b[3] - b[1]);
    });
    svg.addEventListener("pointerup", function (ev) {
      if (!start) { return; }
      var b = box(start, pos(ev));
      start = null;
      if (b[2] - b[0] < 2 || b[3] - b[1] < 2) { return; }
      cmd.hidden = false;
      var add = "streetveil request add " + PUBLISH_PATH + " --frame " + c.getAttribute("data-frame");
      cmd.textContent = add + " --blur " + b.join(",") + " --reason \"...\" --requester-ref CASE-ID\n" +
        "false plate box (sign, lettering) instead: " + add + " --unblur " + b.join(",") + " --reason \"...\"";
    });
  });

  var m = /filter=([a-z-]+)/.exec(location.hash || "");
  applyFilter(m ? m[1] : "all");
  document.getElementById("js-errors").textContent = window.__errors.join("\n");
  window.addEventListener("error", function () {
    document.getElementById("js-errors").textContent = window.__errors.join("\n");
  });
  document.body.setAttribute("data-ready", "1");
}());
