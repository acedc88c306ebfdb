// JIP web UI: small progressive enhancements (no inline scripts: the CSP forbids them).
(function () {
  "use strict";

  // Facet checkboxes apply at once.
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.addEventListener("change", function (event) {
      if (event.target instanceof HTMLInputElement && event.target.type === "checkbox") {
        form.requestSubmit();
      }
    });
  });

  // Series viewer: a slider (and the mouse wheel over the image) scrolls through images;
  // SEG overlays are transparent PNGs stacked over the image, one per SEG, drawn by the
  // server for the current image and the segments ticked in that SEG's legend.
  document.querySelectorAll("[data-viewer]").forEach(function (viewer) {
    var img = viewer.querySelector("[data-frame]");
    var slider = viewer.querySelector("[data-slider]");
    var index = viewer.querySelector("[data-index]");
    var items = Array.prototype.slice.call(viewer.querySelectorAll("[data-src]"));
    var overlays = Array.prototype.slice.call(viewer.querySelectorAll("[data-overlay]"));
    var legends = Array.prototype.slice.call(viewer.querySelectorAll("[data-legend]"));
    var opacity = viewer.querySelector("[data-opacity]");
    if (!img || !slider || items.length === 0) { return; }
    var current = 1;

    function drawOverlay(overlay, position) {
      var legend = legends[overlays.indexOf(overlay)];
      var toggle = legend ? legend.querySelector("[data-overlay-toggle]") : null;
      var boxes = legend ? Array.prototype.slice.call(legend.querySelectorAll("[data-segment]")) : [];
      var chosen = boxes.filter(function (box) { return box.checked; });
      if ((toggle && !toggle.checked) || (boxes.length > 0 && chosen.length === 0)) {
        overlay.hidden = true;
        return;
      }
      var query = chosen.length === boxes.length ? "" : "?" + chosen.map(function (box) {
        return "segment=" + encodeURIComponent(box.getAttribute("data-segment"));
      }).join("&");
      var instance = items[position - 1].getAttribute("data-instance");
      overlay.src = overlay.getAttribute("data-overlay") + "/" + encodeURIComponent(instance) + query;
      overlay.hidden = false;
    }

    function show(position) {
      current = Math.min(Math.max(position, 1), items.length);
      slider.value = String(current);
      index.textContent = String(current);
      img.src = items[current - 1].getAttribute("data-src");
      img.alt = "image " + current + " of " + items.length;
      overlays.forEach(function (overlay) { drawOverlay(overlay, current); });
    }

    function setOpacity() {
      var value = opacity ? parseInt(opacity.value, 10) / 100 : 0.5;
      overlays.forEach(function (overlay) { overlay.style.opacity = String(value); });
    }

    slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
    viewer.addEventListener("wheel", function (event) {
      if (!(event.target instanceof HTMLImageElement)) { return; }
      event.preventDefault();
      show(current + (event.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    legends.forEach(function (legend) {
      legend.addEventListener("change", function () { show(current); });
    });
    if (opacity) { opacity.addEventListener("input", setOpacity); }
    setOpacity();
    show(1);
  });

  // Legend swatches take their segment's colour (inline styles are blocked by the CSP).
  document.querySelectorAll("[data-color]").forEach(function (swatch) {
    swatch.style.backgroundColor = swatch.getAttribute("data-color");
  });

  // Run pages refresh themselves while the run is not finished, but not while the user
  // is filling in a form (a chosen SEG file would be lost). They load the run's own URL,
  // so a page answering a form post is never posted again.
  var refresh = document.querySelector("[data-refresh-s]");
  if (refresh) {
    var seconds = parseInt(refresh.getAttribute("data-refresh-s"), 10) || 3;
    var target = refresh.getAttribute("data-refresh-url") || window.location.href;
    var busy = function () {
      var chosen = Array.prototype.some.call(document.querySelectorAll("input[type=file]"),
        function (input) { return input.files && input.files.length > 0; });
      var active = document.activeElement;
      return chosen || (active !== null && active.closest("main form") !== null);
    };
    var tick = function () {
      if (busy()) { window.setTimeout(tick, seconds * 1000); return; }
      window.location.replace(target);
    };
    window.setTimeout(tick, seconds * 1000);
  }
})();
