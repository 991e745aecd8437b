// The console's one script. Pages work without it; with it, a table marked data-live is
// refreshed every half second while its "live" box is ticked.
(function () {
  "use strict";
  var table = document.querySelector("table[data-live]");
  if (!table) return;
  var toggle = document.getElementById("live");
  var busy = false;
  function tick() {
    if (busy || (toggle && !toggle.checked)) return;
    busy = true;
    fetch(table.getAttribute("data-live"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) table.tBodies[0].innerHTML = html;
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  setInterval(tick, 500);
})();
