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

  // Series viewer: a slider (and the mouse wheel over the image) scrolls through images.
  document.querySelectorAll("[data-viewer]").forEach(function (viewer) {
    var img = viewer.querySelector("[data-frame]");
    var slider = viewer.querySelector("[data-slider]");
    var index = viewer.querySelector("[data-index]");
    var sources = Array.prototype.map.call(viewer.querySelectorAll("[data-src]"), function (li) {
      return li.getAttribute("data-src");
    });
    if (!img || !slider || sources.length === 0) { return; }
    function show(position) {
      var n = Math.min(Math.max(position, 1), sources.length);
      slider.value = String(n);
      index.textContent = String(n);
      img.src = sources[n - 1];
      img.alt = "image " + n + " of " + sources.length;
    }
    slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
    img.addEventListener("wheel", function (event) {
      event.preventDefault();
      show(parseInt(slider.value, 10) + (event.deltaY > 0 ? 1 : -1));
    }, { passive: false });
  });

  // Run pages refresh themselves while the run is not finished.
  var refresh = document.querySelector("[data-refresh-s]");
  if (refresh) {
    var seconds = parseInt(refresh.getAttribute("data-refresh-s"), 10) || 3;
    window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
  }
})();
