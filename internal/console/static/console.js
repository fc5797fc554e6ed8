// The console's own script: firmware upload with drag-and-drop and a progress bar, copy
// buttons, and confirmations. Everything works without it (plain forms); no inline
// script anywhere, so the Content-Security-Policy allows only files of ours.
(function () {
  "use strict";

  function bindUpload(form) {
    var input = form.querySelector("input[type=file]");
    var drop = form.querySelector(".drop");
    var bar = form.querySelector("progress");
    var status = form.querySelector("[role=status]");
    var button = form.querySelector("button[type=submit]");
    ["dragenter", "dragover"].forEach(function (ev) {
      drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (ev) {
      drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        status.textContent = "Ready to upload " + input.files[0].name + ".";
      }
    });
    form.addEventListener("submit", function (e) {
      if (!input.files.length) { return; }
      e.preventDefault();
      var data = new FormData();
      data.append("file", input.files[0]);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("action"));
      xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
      xhr.setRequestHeader("X-Requested-With", "fetch");
      bar.hidden = false;
      bar.value = 0;
      button.disabled = true;
      status.textContent = "Uploading " + input.files[0].name + "…";
      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) { bar.value = Math.round(100 * ev.loaded / ev.total); }
      });
      xhr.addEventListener("load", function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = { error: "The server answered " + xhr.status + "." }; }
        button.disabled = false;
        if (xhr.status >= 200 && xhr.status < 300) {
          bar.value = 100;
          status.textContent = "Stored version " + body.version + ".";
          window.location.assign(body.location);
        } else {
          bar.hidden = true;
          status.textContent = "Upload refused: " + (body.error || ("status " + xhr.status));
          status.classList.add("problem");
        }
      });
      xhr.addEventListener("error", function () {
        button.disabled = false;
        bar.hidden = true;
        status.textContent = "The upload did not reach the server; check the connection and try again.";
      });
      xhr.send(data);
    });
  }

  function bindCopy(button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      var out = document.getElementById("copy-status");
      field.select();
      var done = function () { if (out) { out.textContent = "Copied."; } };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  }

  function init() {
    document.querySelectorAll("form#upload").forEach(bindUpload);
    document.querySelectorAll("button.copy").forEach(bindCopy);
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.dataset.confirm)) { e.preventDefault(); }
      });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
