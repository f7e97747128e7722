// Live worklist: fetch the table's rows every few seconds and swap them in (no reload).
(function () {
  "use strict";
  var table = document.getElementById("worklist");
  if (!table) { return; }
  var url = table.getAttribute("data-rows");
  var seconds = 4;
  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        document.getElementById("worklist-rows").innerHTML = html;
        document.getElementById("updated").textContent = new Date().toLocaleTimeString();
      })
      .catch(function () { /* the node restarting: try again next time */ })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
