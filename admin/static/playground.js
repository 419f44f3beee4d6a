// The playground: a form built from a tool's inputSchema, the call through the gateway's
// pipeline (POST /ui/api/call), and what came back: content, duration, progress and log messages.
"use strict";
(function () {
  const {el, clear, get, post, page, seconds, errorText} = window.UI;
  const MAX_DEPTH = 12; // schema nesting the form follows; deeper parts are raw JSON
  const routeSelect = document.getElementById("pg-route");
  const toolSelect = document.getElementById("pg-tool");
  const filterInput = document.getElementById("pg-filter");
  const fields = document.getElementById("pg-fields");
  const rawToggle = document.getElementById("pg-raw");
  const rawText = document.getElementById("pg-json");
  const formError = document.getElementById("pg-form-error");
  const submit = document.getElementById("pg-submit");
  let catalog = [];
  let current = null; // {route, entry, root: field}
  let counter = 0;

  class FieldError extends Error {
    constructor(path, message, input) { super(message); this.path = path; this.input = input; }
  }

  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  // A local $ref ("#/$defs/X", "#/definitions/X", any JSON pointer into the root schema).
  function resolve(schema, root, seen) {
    let s = schema;
    for (let hops = 0; isObject(s) && typeof s.$ref === "string" && hops < 20; hops++) {
      if (!s.$ref.startsWith("#")) return {};
      if (seen.has(s.$ref)) return null; // recursive: raw JSON from here
      seen = new Set(seen).add(s.$ref);
      let target = root;
      for (const part of s.$ref.slice(1).split("/").filter(Boolean)) {
        const key = decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~");
        target = isObject(target) ? target[key] : undefined;
      }
      const {$ref, ...rest} = s;
      s = isObject(target) ? {...target, ...rest} : {};
    }
    if (isObject(s) && Array.isArray(s.allOf) && s.allOf.length === 1 && Object.keys(s).length === 1) {
      return resolve(s.allOf[0], root, seen);
    }
    return {schema: isObject(s) ? s : {}, seen};
  }

  function kindOf(s) {
    if (Array.isArray(s.enum) && s.enum.length) return "enum";
    if ("const" in s) return "const";
    let t = s.type;
    if (Array.isArray(t)) {
      const real = t.filter((x) => x !== "null");
      t = real.length === 1 ? real[0] : null;
    }
    if (!t && isObject(s.properties)) t = "object";
    if (!t && isObject(s.items)) t = "array";
    if (["string", "integer", "number", "boolean", "object", "array"].includes(t)) {
      if (s.anyOf || s.oneOf) return "raw";
      return t;
    }
    return "raw";
  }

  function label(name, s, required, id) {
    const type = Array.isArray(s.type) ? s.type.join(" | ") : s.type || "";
    return el("label", {for: id},
      el("span", {class: "fname", text: name}),
      required ? el("span", {class: "req", title: "required", text: " *"}) : null,
      type ? el("span", {class: "ftype", text: " " + type}) : null);
  }

  function help(s) {
    const text = [s.title && s.title !== s.description ? s.title : null, s.description].filter(Boolean).join(" — ");
    return text ? el("small", {class: "help", text: String(text).slice(0, 2000)}) : null;
  }

  // build(...) -> {node, get()}: get() returns the value, or undefined when nothing is set.
  function build(name, schema, path, required, root, seen, depth) {
    const resolved = depth > MAX_DEPTH ? null : resolve(schema, root, seen);
    const s = resolved ? resolved.schema : {};
    const kind = resolved ? kindOf(s) : "raw";
    const id = "pg-f" + (++counter);
    const has = (v) => v !== undefined;
    const initial = s.default;

    if (kind === "object" && isObject(s.properties)) {
      const need = new Set(Array.isArray(s.required) ? s.required : []);
      const children = Object.entries(s.properties).map(([key, sub]) =>
        ({key, field: build(key, sub, path ? path + "." + key : key, need.has(key), root, resolved.seen, depth + 1)}));
      const node = path === "" ? el("div", {class: "object root"}) :
        el("fieldset", {class: "object", "data-path": path}, el("legend", {}, label(name, s, required, id)), help(s));
      node.append(...children.map((c) => c.field.node));
      if (!children.length && path === "") node.append(el("p", {class: "muted", text: "This tool takes no arguments."}));
      return {node, get() {
        const out = {};
        for (const c of children) {
          const v = c.field.get();
          if (has(v)) out[c.key] = v;
        }
        return Object.keys(out).length || required || path === "" ? out : undefined;
      }};
    }

    if (kind === "array" && (isObject(s.items) || s.items === undefined)) {
      const list = el("ol", {class: "items"});
      const items = [];
      const add = () => {
        const index = items.length;
        const item = build(name + "[" + index + "]", s.items || {}, path + "." + index, true, root, resolved.seen, depth + 1);
        const row = el("li", {}, item.node);
        const entry = {item, row};
        row.append(el("button", {type: "button", class: "secondary small", text: "Remove", on: {click: () => {
          items.splice(items.indexOf(entry), 1);
          row.remove();
        }}}));
        items.push(entry);
        list.append(row);
      };
      const node = el("fieldset", {class: "array", "data-path": path}, el("legend", {}, label(name, s, required, id)), help(s), list,
        el("button", {type: "button", class: "secondary small add", id, "data-add": path, text: "Add item", on: {click: add}}));
      if (Array.isArray(initial)) initial.forEach(add);
      return {node, get() {
        const out = items.map((e) => e.item.get()).filter(has);
        return out.length || required ? out : undefined;
      }};
    }

    const wrap = (input) => el("div", {class: "field", "data-path": path}, label(name, s, required, id), input, help(s));

    if (kind === "enum" || kind === "boolean" && !required) {
      const options = kind === "enum" ? s.enum : [true, false];
      const select = el("select", {id, name: path});
      if (!required || !has(initial)) select.append(el("option", {value: "", text: required ? "(choose)" : "(not set)"}));
      options.forEach((v, i) => select.append(el("option", {value: String(i), text: typeof v === "string" ? v : JSON.stringify(v)})));
      if (has(initial)) {
        const at = options.findIndex((v) => JSON.stringify(v) === JSON.stringify(initial));
        if (at >= 0) select.value = String(at);
      }
      return {node: wrap(select), get() {
        if (select.value === "") {
          if (required) throw new FieldError(path, "choose a value", select);
          return undefined;
        }
        return options[Number(select.value)];
      }};
    }

    if (kind === "const") {
      return {node: wrap(el("code", {id, text: JSON.stringify(s.const)})), get: () => s.const};
    }

    if (kind === "boolean") {
      const box = el("input", {type: "checkbox", id, name: path});
      box.checked = initial === true;
      return {node: wrap(box), get: () => box.checked};
    }

    if (kind === "integer" || kind === "number") {
      const input = el("input", {type: "number", id, name: path, step: kind === "integer" ? "1" : "any",
        min: s.minimum, max: s.maximum, inputmode: kind === "integer" ? "numeric" : "decimal"});
      if (typeof initial === "number") input.value = String(initial);
      return {node: wrap(input), get() {
        const text = input.value.trim();
        if (text === "") {
          if (required) throw new FieldError(path, "a number is required", input);
          return undefined;
        }
        const value = Number(text);
        if (!isFinite(value) || (kind === "integer" && !Number.isInteger(value))) {
          throw new FieldError(path, kind === "integer" ? "expected an integer" : "expected a number", input);
        }
        return value;
      }};
    }

    if (kind === "string") {
      const long = (s.maxLength || 0) > 200 || s.format === "textarea";
      const input = long ? el("textarea", {id, name: path, rows: 3}) :
        el("input", {type: "text", id, name: path, autocomplete: "off", placeholder: s.format || s.pattern || ""});
      if (typeof initial === "string") input.value = initial;
      return {node: wrap(input), get() {
        if (input.value === "" && !required) return undefined;
        return input.value;
      }};
    }

    // Anything else (anyOf, oneOf, a map without properties, tuples, deep or recursive parts): raw JSON.
    const area = el("textarea", {id, name: path, rows: 3, spellcheck: "false", class: "json", placeholder: "JSON"});
    if (has(initial)) area.value = JSON.stringify(initial);
    return {node: wrap(area), get() {
      const text = area.value.trim();
      if (text === "") {
        if (required) throw new FieldError(path, "a JSON value is required", area);
        return undefined;
      }
      try { return JSON.parse(text); } catch (err) { throw new FieldError(path, "not JSON: " + err.message, area); }
    }};
  }

  function routeEntry() { return catalog.find((r) => r.prefix === routeSelect.value); }

  function fillTools() {
    const route = routeEntry();
    const words = filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
    const previous = toolSelect.value;
    clear(toolSelect);
    for (const t of route ? route.tools : []) {
      const name = typeof t.entry.name === "string" ? t.entry.name : "";
      const text = (name + " " + (t.entry.description || "")).toLowerCase();
      if (name && words.every((w) => text.includes(w))) toolSelect.append(el("option", {value: name, text: name}));
    }
    if (previous) toolSelect.value = previous;
  }

  function pick() {
    const route = routeEntry();
    const tool = route && route.tools.find((t) => t.entry.name === toolSelect.value);
    clear(fields);
    formError.hidden = true;
    if (!tool) { current = null; submit.disabled = true; return; }
    const entry = tool.entry;
    document.getElementById("pg-title").textContent = entry.name;
    document.getElementById("pg-description").textContent = typeof entry.description === "string" ? entry.description : "";
    const schema = isObject(entry.inputSchema) ? entry.inputSchema : {type: "object"};
    counter = 0;
    const root = build("arguments", schema, "", true, schema, new Set(), 0);
    current = {route: route.prefix, name: entry.name, root, formable: kindOf((resolve(schema, schema, new Set()) || {}).schema || {}) === "object"};
    fields.append(root.node);
    rawText.value = "{}";
    setRaw(!current.formable);
    submit.disabled = false;
    const url = new URL(window.location.href);
    url.searchParams.set("route", route.prefix);
    url.searchParams.set("tool", entry.name);
    window.history.replaceState(null, "", url.pathname + url.search);
  }

  function setRaw(on) {
    rawToggle.checked = on;
    if (on && current) {
      try { rawText.value = JSON.stringify(current.root.get() || {}, null, 2); } catch (err) { /* keep what is there */ }
    }
    rawText.hidden = !on;
    fields.hidden = on;
  }

  function argumentsOf() {
    if (rawToggle.checked) {
      let value;
      try { value = JSON.parse(rawText.value || "{}"); } catch (err) { throw new FieldError("arguments", "not JSON: " + err.message, rawText); }
      if (!isObject(value)) throw new FieldError("arguments", "the arguments must be a JSON object", rawText);
      return value;
    }
    return current.root.get() || {};
  }

  function showContent(out, item) {
    if (!isObject(item)) { out.append(el("pre", {class: "text", text: JSON.stringify(item)})); return; }
    const mime = typeof item.mimeType === "string" ? item.mimeType : "";
    const imageOk = /^image\/[a-z0-9.+-]+$/i.test(mime) && typeof item.data === "string" && /^[A-Za-z0-9+/=\s]*$/.test(item.data);
    if (item.type === "text") {
      out.append(el("pre", {class: "text", text: String(item.text)}));
    } else if (item.type === "image") {
      if (imageOk) {
        const img = el("img", {alt: "image content (" + mime + ")", class: "content-image"});
        img.src = "data:" + mime + ";base64," + item.data.replace(/\s/g, "");
        out.append(el("figure", {}, img, el("figcaption", {class: "muted small", text: mime})));
      } else {
        out.append(el("p", {class: "muted", text: "An image whose MIME type (" + mime + ") or data cannot be shown."}));
      }
    } else if (item.type === "resource" && isObject(item.resource)) {
      const r = item.resource;
      const box = el("div", {class: "resource"}, el("p", {class: "small"}, "Embedded resource ", el("code", {text: String(r.uri || "")}), r.mimeType ? " (" + r.mimeType + ")" : ""));
      if (typeof r.text === "string") box.append(el("pre", {class: "text", text: r.text}));
      else if (typeof r.blob === "string") box.append(el("p", {class: "muted", text: "binary, " + Math.floor(r.blob.length * 3 / 4) + " bytes"}));
      out.append(box);
    } else if (item.type === "resource_link") {
      out.append(el("p", {class: "resource"}, "Resource link ", el("code", {text: String(item.uri || "")}), item.name ? " " + item.name : ""));
    } else if (item.type === "audio") {
      out.append(el("p", {class: "muted", text: "Audio content (" + mime + ", " + Math.floor(String(item.data || "").length * 3 / 4) + " bytes)"}));
    } else {
      out.append(el("pre", {class: "text", text: JSON.stringify(item, null, 2)}));
    }
  }

  function showMessages(list, notifications, dropped) {
    clear(list);
    for (const n of notifications) {
      const params = isObject(n.params) ? n.params : {};
      if (n.method === "notifications/progress") {
        const total = params.total !== undefined ? "/" + params.total : "";
        list.append(el("li", {class: "progress"}, el("span", {class: "tag", text: "progress"}), " " + params.progress + total + (params.message ? " " + params.message : "")));
      } else if (n.method === "notifications/message") {
        const data = typeof params.data === "string" ? params.data : JSON.stringify(params.data);
        list.append(el("li", {class: "log level-" + String(params.level || "info").replace(/[^a-z]/g, "")},
          el("span", {class: "tag", text: String(params.level || "info")}), params.logger ? " " + params.logger + ":" : "", " " + data));
      } else {
        list.append(el("li", {}, el("span", {class: "tag", text: "notification"}), " " + String(n.method || JSON.stringify(n))));
      }
    }
    if (dropped) list.append(el("li", {class: "muted", text: dropped + " more not kept"}));
    if (!list.children.length) list.append(el("li", {class: "muted", text: "None."}));
  }

  function showResult(reply) {
    const out = clear(document.getElementById("pg-output"));
    const duration = document.getElementById("pg-duration");
    const rawAnswer = document.getElementById("pg-raw-answer");
    out.className = "output";
    if (!reply.ok) {
      out.classList.add("is-error");
      out.append(el("p", {class: "error", text: errorText(reply)}));
      duration.textContent = "";
      rawAnswer.textContent = JSON.stringify(reply.data, null, 2);
      return;
    }
    const data = reply.data;
    duration.textContent = "in " + seconds(data.seconds);
    rawAnswer.textContent = JSON.stringify(data.answer, null, 2);
    showMessages(document.getElementById("pg-messages"), data.notifications || [], data.dropped);
    if (data.failure) {
      out.classList.add("is-error");
      out.append(el("p", {class: "error", text: data.failure}));
      return;
    }
    const answer = data.answer || {};
    if (isObject(answer.error)) {
      out.classList.add("is-error");
      out.append(el("p", {class: "error"}, "Error " + answer.error.code + ": " + answer.error.message));
      if (answer.error.data !== undefined) out.append(el("pre", {class: "text", text: JSON.stringify(answer.error.data, null, 2)}));
      return;
    }
    const result = isObject(answer.result) ? answer.result : {};
    if (result.isError === true) {
      out.classList.add("is-error");
      out.append(el("p", {class: "error", text: "The tool reported an error (isError)."}));
    }
    const content = Array.isArray(result.content) ? result.content : [];
    content.forEach((item) => showContent(out, item));
    if (result.structuredContent !== undefined) {
      out.append(el("h4", {text: "Structured content"}), el("pre", {class: "text", text: JSON.stringify(result.structuredContent, null, 2)}));
    }
    if (!content.length && result.structuredContent === undefined) out.append(el("p", {class: "muted", text: "(no content)"}));
  }

  async function call(event) {
    event.preventDefault();
    if (!current) return;
    formError.hidden = true;
    for (const bad of document.querySelectorAll(".invalid")) bad.classList.remove("invalid");
    let args;
    try {
      args = argumentsOf();
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      formError.textContent = (err.path || "arguments") + ": " + err.message;
      formError.hidden = false;
      if (err.input) { err.input.classList.add("invalid"); err.input.focus(); }
      return;
    }
    submit.disabled = true;
    submit.textContent = "Calling…";
    clear(document.getElementById("pg-messages"));
    try {
      showResult(await post(page("/call"), {route: current.route, method: "tools/call", name: current.name, arguments: args}));
    } finally {
      submit.disabled = false;
      submit.textContent = "Call";
    }
  }

  async function start() {
    const reply = await get(page("/catalog"));
    if (!reply.ok) { window.UI.notice("Could not load the catalog: " + errorText(reply), "error"); return; }
    catalog = reply.data.routes;
    for (const r of catalog) routeSelect.append(el("option", {value: r.prefix, text: r.prefix + " (" + r.tools.length + " tools)"}));
    const asked = new URLSearchParams(window.location.search);
    if (asked.get("route") && catalog.some((r) => r.prefix === asked.get("route"))) routeSelect.value = asked.get("route");
    fillTools();
    if (asked.get("tool")) { toolSelect.value = asked.get("tool"); pick(); }
  }

  routeSelect.addEventListener("change", () => { fillTools(); pick(); });
  filterInput.addEventListener("input", fillTools);
  toolSelect.addEventListener("change", pick);
  rawToggle.addEventListener("change", () => setRaw(rawToggle.checked));
  document.getElementById("pg-call").addEventListener("submit", call);
  start();
})();
