// JIP Upload page: files, folders (input or drag-and-drop, walked recursively) and zips,
// sent in batches to POST /ui/upload with per-file progress and a result per file.
(function () {
  "use strict";

  var root = document.querySelector("[data-upload]");
  if (!root) { return; }
  var BATCH_FILES = 50;
  var BATCH_BYTES = 64 * 1024 * 1024;
  var csrf = root.getAttribute("data-csrf");
  var project = root.querySelector("[data-upload-project]");
  var zone = root.querySelector("[data-dropzone]");
  var startButton = root.querySelector("[data-upload-start]");
  var clearButton = root.querySelector("[data-upload-clear]");
  var summary = root.querySelector("[data-upload-summary]");
  var done = root.querySelector("[data-upload-done]");
  var tbody = root.querySelector("[data-upload-files] tbody");
  var queue = [];  // {file, name, row, bar, result, reason}
  var counts = { stored: 0, duplicate: 0, skipped: 0, refused: 0 };
  var busy = false;

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function megabytes(size) {
    return size < 1024 * 1024 ? Math.ceil(size / 1024) + " KB" : (size / 1048576).toFixed(1) + " MB";
  }

  function isZip(item) { return /\.zip$/i.test(item.name); }

  function add(file, name) {
    var row = document.createElement("tr");
    row.setAttribute("data-file", name);
    cell(row, name);
    cell(row, megabytes(file.size));
    var bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    cell(row, "").appendChild(bar);
    var item = { file: file, name: name, row: row, bar: bar, result: cell(row, "waiting"), reason: cell(row, "") };
    tbody.appendChild(row);
    queue.push(item);
    startButton.disabled = busy;
    clearButton.disabled = busy;
  }

  function show(item, status, reason) {
    item.result.textContent = status;
    item.reason.textContent = reason || "";
    item.row.className = "upload-" + status.split(" ")[0];
  }

  // A result of a zip member: a row of its own below the zip's row.
  function memberRow(result) {
    var row = document.createElement("tr");
    row.setAttribute("data-file", result.name);
    row.className = "upload-" + result.status;
    cell(row, result.name);
    cell(row, "");
    cell(row, "");
    cell(row, result.status);
    cell(row, result.reason || "");
    return row;
  }

  function tally() {
    var parts = [];
    Object.keys(counts).forEach(function (key) { parts.push(counts[key] + " " + key); });
    summary.textContent = parts.join(", ");
  }

  function record(batch, body) {
    var byName = {};
    batch.forEach(function (item) { byName[item.name] = item; });
    var zipped = {};
    body.results.forEach(function (result) {
      counts[result.status] = (counts[result.status] || 0) + 1;
      var item = byName[result.name];
      if (item) { show(item, result.status, result.reason); return; }
      var owner = batch.filter(function (b) { return result.name.indexOf(b.name + "/") === 0; })[0];
      if (!owner) { return; }
      var group = zipped[owner.name] || (zipped[owner.name] = { item: owner, counts: {}, after: owner.row });
      group.counts[result.status] = (group.counts[result.status] || 0) + 1;
      if (result.status !== "stored") {
        var row = memberRow(result);
        group.after.parentNode.insertBefore(row, group.after.nextSibling);
        group.after = row;
      }
    });
    Object.keys(zipped).forEach(function (name) {
      var z = zipped[name];
      var text = Object.keys(z.counts).map(function (k) { return z.counts[k] + " " + k; }).join(", ");
      show(z.item, "unpacked", text);
    });
    tally();
  }

  function fail(batch, message) {
    batch.forEach(function (item) {
      counts.refused += 1;
      show(item, "refused", message);
    });
    tally();
  }

  function send(batch) {
    return new Promise(function (resolve) {
      var form = new FormData();
      batch.forEach(function (item) {
        form.append("files", item.file, item.name);
        show(item, "uploading", "");
      });
      var xhr = new XMLHttpRequest();
      xhr.open("POST", "/ui/upload?project=" + encodeURIComponent(project.value));
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.responseType = "json";
      xhr.upload.onprogress = function (event) {
        var left = event.loaded;  // the form's own bytes are few: close enough per file
        batch.forEach(function (item) {
          item.bar.value = Math.max(0, Math.min(item.file.size, left));
          left -= item.file.size;
        });
      };
      xhr.upload.onload = function () {
        batch.forEach(function (item) {
          item.bar.value = item.bar.max;
          show(item, "storing", isZip(item) ? "unpacking and storing its files" : "");
        });
      };
      xhr.onload = function () {
        var body = xhr.response;
        if (xhr.status === 200 && body && body.results) {
          record(batch, body);
        } else if (body && body.detail) {
          fail(batch, body.detail + " (HTTP " + xhr.status + ")");
        } else {
          fail(batch, "the session may have expired: reload the page and sign in (HTTP " + xhr.status + ")");
        }
        resolve();
      };
      xhr.onerror = function () { fail(batch, "the connection failed: upload again"); resolve(); };
      xhr.send(form);
    });
  }

  // Zips alone; other files in batches (a few hundred files are several requests).
  function batches(items) {
    var out = [], batch = [], size = 0;
    items.forEach(function (item) {
      if (isZip(item)) { out.push([item]); return; }
      if (batch.length && (batch.length >= BATCH_FILES || size + item.file.size > BATCH_BYTES)) {
        out.push(batch);
        batch = [];
        size = 0;
      }
      batch.push(item);
      size += item.file.size;
    });
    if (batch.length) { out.push(batch); }
    return out;
  }

  function start() {
    var pending = queue.filter(function (item) { return item.result.textContent === "waiting"; });
    if (!pending.length || busy) { return; }
    busy = true;
    startButton.disabled = clearButton.disabled = project.disabled = true;
    done.hidden = true;
    var chain = Promise.resolve();
    batches(pending).forEach(function (batch) { chain = chain.then(function () { return send(batch); }); });
    chain.then(function () {
      busy = false;
      clearButton.disabled = project.disabled = false;
      done.hidden = false;
    });
  }

  // Folders dropped: walk their entries (readEntries answers in pieces until empty).
  function walk(entry, prefix) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (file) { add(file, prefix + file.name); resolve(); }, function () { resolve(); });
        return;
      }
      var reader = entry.createReader();
      var children = [];
      (function more() {
        reader.readEntries(function (entries) {
          if (!entries.length) {
            Promise.all(children.map(function (c) { return walk(c, prefix + entry.name + "/"); })).then(resolve);
            return;
          }
          children = children.concat(Array.prototype.slice.call(entries));
          more();
        }, function () { resolve(); });
      })();
    });
  }

  zone.addEventListener("dragover", function (event) {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", function () { zone.classList.remove("dragging"); });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("dragging");
    var items = Array.prototype.slice.call(event.dataTransfer.items || []);
    var entries = items.map(function (i) { return i.webkitGetAsEntry && i.webkitGetAsEntry(); });
    if (entries.length && entries.every(Boolean)) {
      entries.forEach(function (entry) { walk(entry, ""); });
      return;
    }
    Array.prototype.forEach.call(event.dataTransfer.files, function (file) { add(file, file.name); });
  });
  root.querySelector("[data-pick-files]").addEventListener("change", function (event) {
    Array.prototype.forEach.call(event.target.files, function (file) { add(file, file.name); });
    event.target.value = "";
  });
  root.querySelector("[data-pick-folder]").addEventListener("change", function (event) {
    Array.prototype.forEach.call(event.target.files, function (file) {
      add(file, file.webkitRelativePath || file.name);
    });
    event.target.value = "";
  });
  startButton.addEventListener("click", start);
  clearButton.addEventListener("click", function () {
    queue = [];
    tbody.textContent = "";
    counts = { stored: 0, duplicate: 0, skipped: 0, refused: 0 };
    summary.textContent = "";
    done.hidden = true;
    startButton.disabled = clearButton.disabled = true;
  });
})();
