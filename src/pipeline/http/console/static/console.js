// The console's only script: live regions refresh themselves. Without it, every page
// is complete and has a refresh link.
//
// <div data-fragment="URL" [data-stream="SSE URL"] [data-every="ms"]>: the element's
// content is replaced by GET URL whenever the stream says "changed" (at most once a
// second: the server debounces), and every data-every ms. A fragment that contains
// [data-finished] stops the refreshing.
"use strict";
(function () {
  function live(element) {
    var url = element.getAttribute("data-fragment");
    var every = parseInt(element.getAttribute("data-every") || "0", 10);
    var busy = false, again = false, timer = null, stream = null;
    function stop() {
      if (timer) { clearInterval(timer); timer = null; }
      if (stream) { stream.close(); stream = null; }
    }
    function typing() {
      var active = document.activeElement;
      return active && element.contains(active) && active.tagName === "INPUT";
    }
    function refresh() {
      if (typing()) { return; } // never replace a field the operator is filling in
      if (busy) { again = true; return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null || html === undefined) { return; }
          element.innerHTML = html;
          element.setAttribute("data-refreshed", String(Date.now()));
          if (element.querySelector("[data-finished]")) { stop(); }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () {
          busy = false;
          if (again) { again = false; refresh(); }
        });
    }
    var source = element.getAttribute("data-stream");
    if (source && window.EventSource) {
      stream = new EventSource(source);
      stream.addEventListener("changed", refresh);
    }
    if (every > 0) { timer = setInterval(refresh, every); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var elements = document.querySelectorAll("[data-fragment]");
    for (var i = 0; i < elements.length; i++) { live(elements[i]); }
  });
})();
