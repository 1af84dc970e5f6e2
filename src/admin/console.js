// The Causeway console's one script: the overview keeps itself current
// (every few seconds, from /admin/api/overview), and a form being sent
// says so. Every page works without it.
"use strict";
(function () {
  // A button that sends a long action shows that it is under way.
  document.addEventListener("submit", function (e) {
    var b = e.target.querySelector("button[type=submit]");
    if (b) { b.setAttribute("aria-busy", "true"); b.disabled = true; b.textContent = b.textContent + "…"; }
  });
  var table = document.getElementById("bridges");
  if (!table) return;
  var last = null;
  function set(el, text) { if (el && el.textContent !== String(text)) el.textContent = text; }
  function refresh() {
    fetch("/admin/api/overview", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (o) {
        var pending = 0, dead = 0, events = 0;
        o.bridges.forEach(function (b) {
          pending += b.pending; dead += b.dead; events += b.events_in + b.events_out;
          var row = table.querySelector('tr[data-bridge="' + CSS.escape(b.name) + '"]');
          if (!row) return;
          var up = row.querySelector('[data-field="up"]');
          set(up, b.up ? "up" : "down"); up.className = b.up ? "up" : "down";
          set(row.querySelector('[data-field="events_in"]'), b.events_in);
          set(row.querySelector('[data-field="events_out"]'), b.events_out);
          set(row.querySelector('[data-field="pending"]'), b.pending);
          var d = row.querySelector('[data-field="dead"] a'); set(d, b.dead);
          set(row.querySelector('[data-field="lag"]'), b.lag_ms == null ? "—" : Math.floor(b.lag_ms / 1000) + " s");
          set(row.querySelector('[data-field="last_error"]'), b.last_error ? b.last_error.message : "—");
        });
        set(document.querySelector('[data-total="pending"]'), pending);
        set(document.querySelector('[data-total="dead"]'), dead);
        if (last) {
          var minutes = (o.at_ms - last.at_ms) / 60000;
          if (minutes > 0) set(document.querySelector('[data-total="events_per_minute"]'), Math.round((events - last.events) / minutes));
          var n = o.latency_count - last.latency_count;
          if (n > 0) set(document.querySelector('[data-total="latency"]'), ((o.latency_ms_sum - last.latency_ms_sum) / n / 1000).toFixed(2) + " s");
        }
        last = { at_ms: o.at_ms, events: events, latency_count: o.latency_count, latency_ms_sum: o.latency_ms_sum };
        set(document.getElementById("updated"), new Date(o.at_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC");
      })
      .catch(function () { set(document.getElementById("updated"), "— the console does not answer"); });
  }
  refresh();
  setInterval(refresh, 3000);
})();
