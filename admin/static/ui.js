// Shared helpers of the admin page. Everything that came from the gateway or an upstream is put
// into the page as text (textContent, attributes set one by one), never parsed as HTML.
"use strict";
(function () {
  function meta(name) {
    const found = document.querySelector('meta[name="' + name + '"]');
    return found ? found.getAttribute("content") || "" : "";
  }
  const PREFIX = meta("ui-prefix") || "/ui";
  const CSRF = meta("csrf-token");

  // el("td", {class: "x", text: "y", title: "z"}, child, "text", ...): a new element.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = String(value);
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key.startsWith("on")) throw new Error("use on: {...} for event handlers");
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  // One request to the page's JSON (/ui/api/...) or the JSON API through the session (/ui/admin/...).
  async function request(method, url, body) {
    const headers = {"X-CSRF-Token": CSRF, "Accept": "application/json"};
    const init = {method, headers, credentials: "same-origin", cache: "no-store", redirect: "error"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      return {status: 0, ok: false, data: {error: {code: "unreachable", message: "the gateway did not answer (" + err.message + ")", path: null}}};
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("application/json")) {
      try { data = await response.json(); } catch (err) { data = null; }
    } else if (response.status !== 204) {
      data = {text: await response.text()};
    }
    if (response.status === 401 && url.startsWith(PREFIX)) {
      window.location.assign(PREFIX + "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
    }
    return {status: response.status, ok: response.ok, data};
  }

  function errorText(reply) {
    const err = reply && reply.data && reply.data.error;
    if (!err) return "HTTP " + (reply ? reply.status : "?");
    return (err.path ? err.path + ": " : "") + (err.message || err.code || "error");
  }

  function seconds(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value < 0.001) return Math.round(value * 1e6) + " µs";
    if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 2 : 1).replace(/\.0+$/, "") + " ms";
    return value.toFixed(2).replace(/\.?0+$/, "") + " s";
  }

  function when(unix) {
    if (typeof unix !== "number") return "";
    const d = new Date(unix * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function notice(message, kind) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = message || "";
    box.className = "notice " + (kind || "");
    box.hidden = !message;
  }

  // A button that asks once more before it acts (no window.confirm: nothing modal).
  function confirming(label, question, action) {
    let armed = null;
    const button = el("button", {type: "button", class: "secondary", text: label});
    button.addEventListener("click", async () => {
      if (!armed) {
        button.textContent = question;
        button.classList.add("danger");
        armed = setTimeout(() => { armed = null; button.textContent = label; button.classList.remove("danger"); }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.disabled = true;
      try { await action(); } finally { button.disabled = false; button.textContent = label; button.classList.remove("danger"); }
    });
    return button;
  }

  window.UI = {
    PREFIX, el, append, clear, request, errorText, seconds, when, notice, confirming,
    admin: (path) => PREFIX + "/admin" + path,
    page: (path) => PREFIX + "/api" + path,
    get: (url) => request("GET", url),
    post: (url, body) => request("POST", url, body === undefined ? {} : body),
  };
})();
