// Servers: the list, add / edit / remove through the JSON API (its validation messages name the
// field), tool definitions waiting for approval, config versions with a diff and a roll back.
"use strict";
(function () {
  const {el, clear, get, post, request, admin, when, errorText, notice, confirming} = window.UI;
  const form = document.getElementById("server-form");
  const errorBox = document.getElementById("server-error");
  const kind = document.getElementById("s-kind");
  const nameInput = document.getElementById("s-name");
  const saveButton = document.getElementById("server-save");
  const cancelButton = document.getElementById("server-cancel");
  const routesBox = document.getElementById("s-routes");
  const KNOWN = ["command", "args", "env", "image", "url", "http"];
  let editing = null; // the name of the server being edited (null: adding)
  let versionsBefore = null;

  const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

  function showKind() {
    for (const node of form.querySelectorAll(".kind-process, .kind-container, .kind-remote, .kind-http")) {
      node.hidden = !node.classList.contains("kind-" + kind.value);
    }
    document.querySelector('label[for="s-args"]').textContent = kind.value === "container"
      ? "Container command (one item per line)" : "Arguments (one per line)";
  }

  function fieldFor(path) {
    // A key path from the config rules ("servers.x.command", "servers.x.env.TOKEN", "name", "routes[0]").
    const p = String(path || "");
    const inner = p.replace(/^servers\.[^.]+\.?/, "").replace(/^server\.?/, "");
    if (p === "name") return nameInput;
    if (p.startsWith("routes")) return routesBox;
    const head = inner.split(/[.[]/)[0];
    if (head === "http") {  // servers.x.http.base_url, servers.x.http.openapi, ...: the REST API's fields
      const sub = inner.split(/[.[]/)[1];
      return document.getElementById(sub === "openapi" ? "s-openapi" : sub === "base_url" ? "s-base_url" : "s-extra");
    }
    if (head === "args") return document.getElementById(kind.value === "container" ? "s-args" : "s-args");
    if (head === "command") return document.getElementById(kind.value === "container" && inner.startsWith("command[") ? "s-args" : "s-command");
    if (KNOWN.includes(head)) return document.getElementById("s-" + head);
    return document.getElementById("s-extra");
  }

  function clearErrors() {
    errorBox.hidden = true;
    for (const bad of form.querySelectorAll(".invalid")) { bad.classList.remove("invalid"); bad.removeAttribute("aria-invalid"); }
  }

  function fail(path, message) {
    errorBox.textContent = (path ? path + ": " : "") + message;
    errorBox.hidden = false;
    const target = path ? fieldFor(path) : null;
    if (target) { target.classList.add("invalid"); target.setAttribute("aria-invalid", "true"); if (target.focus) target.focus(); }
  }

  function settings() {
    const out = {};
    const command = document.getElementById("s-command").value.trim();
    const args = lines(document.getElementById("s-args").value);
    const image = document.getElementById("s-image").value.trim();
    const url = document.getElementById("s-url").value.trim();
    const envText = document.getElementById("s-env").value;
    if (kind.value === "process") {
      out.command = command;
      if (args.length) out.args = args;
    } else if (kind.value === "container") {
      out.image = image;
      if (args.length) out.command = args;
    } else if (kind.value === "http") {
      out.http = {base_url: document.getElementById("s-base_url").value.trim()};
      const openapi = document.getElementById("s-openapi").value.trim();
      if (openapi) out.http.openapi = openapi;
    } else {
      out.url = url;
    }
    if ((kind.value === "process" || kind.value === "container") && lines(envText).length) {
      out.env = {};
      for (const line of lines(envText)) {
        const at = line.indexOf("=");
        if (at < 1) throw {path: "env", message: "write each variable as NAME=value (line " + JSON.stringify(line) + ")"};
        out.env[line.slice(0, at).trim()] = line.slice(at + 1);
      }
    }
    const extraText = document.getElementById("s-extra").value.trim();
    if (extraText) {
      let extra;
      try { extra = JSON.parse(extraText); } catch (err) { throw {path: "more settings", message: "not JSON: " + err.message, field: "s-extra"}; }
      if (!extra || typeof extra !== "object" || Array.isArray(extra)) throw {path: "more settings", message: "expected a JSON object", field: "s-extra"};
      if (out.http && extra.http && typeof extra.http === "object") extra.http = Object.assign({}, out.http, extra.http);
      Object.assign(out, extra);
    }
    return out;
  }

  function reset() {
    editing = null;
    form.reset();
    nameInput.readOnly = false;
    routesBox.hidden = false;
    saveButton.textContent = "Add server";
    cancelButton.hidden = true;
    document.getElementById("editor-title").textContent = "Add a server";
    clearErrors();
    showKind();
  }

  function edit(server) {
    reset();
    editing = server.name;
    const config = server.config || {};
    nameInput.value = server.name;
    nameInput.readOnly = true;
    routesBox.hidden = true;
    kind.value = config.http ? "http" : config.url ? "remote" : config.image ? "container" : "process";
    document.getElementById("s-command").value = typeof config.command === "string" ? config.command : "";
    const list = kind.value === "container" ? config.command : config.args;
    document.getElementById("s-args").value = Array.isArray(list) ? list.join("\n") : "";
    document.getElementById("s-image").value = config.image || "";
    document.getElementById("s-url").value = config.url || "";
    const http = config.http || {};
    document.getElementById("s-base_url").value = http.base_url || "";
    document.getElementById("s-openapi").value = http.openapi || "";
    document.getElementById("s-env").value = Object.entries(config.env || {}).map(([k, v]) => k + "=" + v).join("\n");
    const rest = Object.fromEntries(Object.entries(config).filter(([k]) => !KNOWN.includes(k)));
    const httpRest = Object.fromEntries(Object.entries(http).filter(([k]) => k !== "base_url" && k !== "openapi"));
    if (Object.keys(httpRest).length) rest.http = httpRest;  // headers, tools, timeout...: edited as JSON
    document.getElementById("s-extra").value = Object.keys(rest).length ? JSON.stringify(rest, null, 2) : "";
    saveButton.textContent = "Save " + server.name;
    cancelButton.hidden = false;
    document.getElementById("editor-title").textContent = "Edit " + server.name;
    showKind();
    document.getElementById("editor").scrollIntoView({behavior: "smooth"});
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    let body;
    try {
      body = settings();
    } catch (err) {
      fail(err.path, err.message);
      if (err.field) document.getElementById(err.field).classList.add("invalid");
      return;
    }
    saveButton.disabled = true;
    let reply;
    try {
      if (editing) {
        reply = await request("PUT", admin("/servers/" + encodeURIComponent(editing)), body);
      } else {
        const routes = Array.from(routesBox.querySelectorAll("input:checked")).map((i) => i.value);
        const payload = {name: nameInput.value.trim(), server: body};
        if (routes.length) payload.routes = routes;
        reply = await post(admin("/servers"), payload);
      }
    } finally {
      saveButton.disabled = false;
    }
    if (!reply.ok) {
      const err = (reply.data && reply.data.error) || {};
      fail(err.path, err.message || errorText(reply));
      return;
    }
    notice((editing ? "Saved " + editing : "Added " + nameInput.value.trim()) + (reply.data.version ? " (version " + reply.data.version + ")" : " (nothing changed)"), "ok");
    reset();
    await Promise.all([loadServers(), loadVersions(true)]);
  }

  async function loadServers() {
    const [servers, routes] = await Promise.all([get(admin("/servers")), get(admin("/routes"))]);
    if (!servers.ok) { notice("Could not load the servers: " + errorText(servers), "error"); return; }
    const body = clear(document.querySelector("#server-list tbody"));
    for (const s of servers.data.servers) {
      body.append(el("tr", {"data-server": s.name},
        el("th", {scope: "row", text: s.name}),
        el("td", {text: s.kind}),
        el("td", {}, el("span", {class: "state state-" + String(s.state).replace(/[^a-z]/g, ""), text: s.state})),
        el("td", {text: (s.routes || []).join(", ")}),
        el("td", {class: "buttons"},
          el("button", {type: "button", class: "secondary", text: "Edit", on: {click: () => edit(s)}}),
          confirming("Remove", "Really remove " + s.name + "?", async () => {
            const reply = await request("DELETE", admin("/servers/" + encodeURIComponent(s.name)));
            if (reply.ok) notice("Removed " + s.name, "ok"); else notice("Could not remove " + s.name + ": " + errorText(reply), "error");
            await Promise.all([loadServers(), loadVersions(true)]);
          }))));
    }
    if (routes.ok) {
      const legend = routesBox.querySelector("legend");
      clear(routesBox).append(legend);
      const prefixes = Object.keys(routes.data.routes);
      if (!routes.data.explicit) routesBox.append(el("p", {class: "muted small", text: "Every server is at / (no routes configured)."}));
      else for (const prefix of prefixes) {
        const id = "route-" + prefix.replace(/[^a-zA-Z0-9]/g, "_");
        routesBox.append(el("label", {class: "check", for: id}, el("input", {type: "checkbox", id, value: prefix}), " ", prefix));
      }
    }
  }

  async function loadChanges() {
    const box = clear(document.getElementById("changes"));
    const reply = await get(admin("/tools/changes"));
    if (!reply.ok) { box.append(el("p", {class: "muted", text: errorText(reply)})); return; }
    if (!reply.data.changes.length) { box.append(el("p", {class: "muted", text: "None waiting."})); return; }
    for (const c of reply.data.changes) {
      const item = el("article", {class: "change", "data-tool": c.server + "/" + c.tool},
        el("h3", {}, el("code", {text: c.tool}), " of ", el("code", {text: c.server}), el("span", {class: "tag", text: c.mode})),
        el("p", {class: "muted small", text: "first seen " + when(c.first_seen) + " · " + String(c.old.digest).slice(0, 12) + " → " + String(c.new.digest).slice(0, 12)}),
        el("pre", {class: "diff", text: c.diff}));
      const approve = el("button", {type: "button", text: "Approve", on: {click: async () => {
        approve.disabled = true;
        const answer = await post(admin("/tools/changes/" + encodeURIComponent(c.server) + "/" + encodeURIComponent(c.tool) + "/approve"), {digest: c.new.digest});
        if (answer.ok) notice("Approved " + c.tool + " of " + c.server, "ok"); else notice("Could not approve: " + errorText(answer), "error");
        await loadChanges();
      }}});
      item.append(approve);
      box.append(item);
    }
  }

  async function showDiff(id) {
    const reply = await get(admin("/versions/" + id + "/diff"));
    const panel = document.getElementById("diff");
    panel.hidden = false;
    document.getElementById("diff-title").textContent = reply.ok
      ? "Version " + id + " against " + (reply.data.from === null ? "nothing" : "version " + reply.data.from) : "Version " + id;
    document.getElementById("diff-text").textContent = reply.ok ? (reply.data.diff || "(no difference)") : errorText(reply);
  }

  async function loadVersions(fresh) {
    if (fresh) versionsBefore = null;
    const reply = await get(admin("/versions?limit=20" + (versionsBefore ? "&before=" + encodeURIComponent(versionsBefore) : "")));
    const body = document.querySelector("#versions tbody");
    if (fresh || !versionsBefore) clear(body);
    const more = document.getElementById("versions-more");
    if (!reply.ok) { body.append(el("tr", {}, el("td", {colspan: 5, class: "muted", text: errorText(reply)}))); more.hidden = true; return; }
    for (const v of reply.data.versions) {
      body.append(el("tr", {"data-version": v.id},
        el("th", {scope: "row", text: v.id + (v.current ? " (current)" : "")}),
        el("td", {text: when(v.created)}), el("td", {text: v.who}), el("td", {text: v.what}),
        el("td", {class: "buttons"},
          el("button", {type: "button", class: "secondary", text: "Diff", on: {click: () => showDiff(v.id)}}),
          v.current ? null : confirming("Roll back", "Really roll back to " + v.id + "?", async () => {
            const answer = await post(admin("/versions/" + v.id + "/rollback"));
            if (answer.ok) notice("Rolled back to version " + v.id + (answer.data.version ? " (now version " + answer.data.version + ")" : ""), "ok");
            else notice("Could not roll back: " + errorText(answer), "error");
            await Promise.all([loadServers(), loadVersions(true)]);
          }))));
    }
    versionsBefore = reply.data.next;
    more.hidden = !versionsBefore;
  }

  kind.addEventListener("change", showKind);
  form.addEventListener("submit", save);
  cancelButton.addEventListener("click", reset);
  document.getElementById("versions-more").addEventListener("click", () => loadVersions(false));
  showKind();
  loadServers();
  loadChanges();
  loadVersions(true);
})();
