// The overview: servers, routes, sessions and the headline numbers, polled every 2 s.
"use strict";
(function () {
  const {el, clear, get, admin, page, seconds, errorText, notice} = window.UI;
  const LABELS = {ready: "ready", starting: "starting", backoff: "backing off", failed: "down", stopped: "down"};
  const INTERVAL = 2000;
  let timer = null;

  function cell(text, cls) { return el("td", {class: cls, text: text === undefined || text === null ? "" : text}); }

  function renderServers(servers) {
    const body = clear(document.querySelector("#servers tbody"));
    if (!servers.length) body.append(el("tr", {}, el("td", {colspan: 8, class: "muted", text: "No servers."})));
    for (const s of servers) {
      const state = String(s.state || "");
      const instances = Object.entries(s.instances || {}).filter(([, n]) => n).map(([k, n]) => n + " " + k).join(", ") || "0";
      body.append(el("tr", {"data-server": s.name},
        el("th", {scope: "row", text: s.name}),
        el("td", {}, el("span", {class: "state state-" + state.replace(/[^a-z]/g, ""), text: LABELS[state] || state})),
        cell(s.kind + (s.lifecycle && s.lifecycle !== "shared" ? " (" + s.lifecycle + ")" : "")),
        cell(instances + (s.containers ? " · " + s.containers + " containers" : "")),
        cell(s.restarts, "num"),
        cell(s.inflight, "num"),
        cell((s.tools || []).length, "num"),
        cell(s.last_error || "", "error-text")));
    }
  }

  function renderRoutes(routes) {
    const body = clear(document.querySelector("#routes tbody"));
    for (const [prefix, r] of Object.entries(routes || {})) {
      body.append(el("tr", {"data-route": prefix},
        el("th", {scope: "row"}, el("code", {text: prefix})),
        cell((r.servers || []).join(", ")),
        cell((r.tools || []).length, "num"),
        cell(r.sessions, "num"),
        cell((r.collisions || []).join(", "))));
    }
  }

  function renderSessions(data) {
    const body = clear(document.querySelector("#sessions tbody"));
    document.getElementById("sessions-total").textContent = data.total + " in all";
    if (!data.sessions.length) body.append(el("tr", {}, el("td", {colspan: 7, class: "muted", text: "No sessions."})));
    for (const s of data.sessions.slice(0, 100)) {
      const client = [s.client && s.client.name, s.client && s.client.version].filter(Boolean).join(" ");
      body.append(el("tr", {},
        el("th", {scope: "row"}, el("code", {text: s.id + "…"})),
        cell(s.route), cell(s.version), cell(client), cell(s.peer),
        cell(seconds(s.idle_seconds)), cell(s.inflight, "num")));
    }
  }

  function renderHeadline(h) {
    const rate = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0));
    document.getElementById("m-rate").textContent = rate(h.rate);
    document.getElementById("m-errors").textContent = rate(h.error_rate);
    document.getElementById("m-p50").textContent = seconds(h.p50);
    document.getElementById("m-p99").textContent = seconds(h.p99);
    document.getElementById("m-calls").textContent = seconds(h.call_p50) + " / " + seconds(h.call_p99);
    document.getElementById("m-sessions").textContent = String(h.sessions);
    document.getElementById("m-note").textContent = h.rate === null
      ? "Since start: " + h.requests_total + " requests, " + h.errors_total + " errors."
      : "Over the last " + Math.round(h.window_seconds) + " s; since start: " + h.requests_total + " requests, " + h.errors_total + " errors, " + h.calls_total + " tool calls.";
  }

  async function refresh() {
    const [servers, routes, sessions, headline] = await Promise.all([
      get(admin("/servers")), get(admin("/routes")), get(admin("/sessions?limit=100")), get(page("/headline"))]);
    const failed = [servers, routes, sessions, headline].find((r) => !r.ok);
    if (failed) {
      notice("Could not update: " + errorText(failed), "error");
    } else {
      notice("");
      renderServers(servers.data.servers);
      renderRoutes(routes.data.routes);
      renderSessions(sessions.data);
      renderHeadline(headline.data);
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }
  }

  async function loop() {
    timer = null;
    try { await refresh(); } finally {
      if (!document.hidden) timer = setTimeout(loop, INTERVAL);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) loop();
  });
  loop();
})();
