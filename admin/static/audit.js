// The audit log: filters and paging (newest first; "Older" pages on with `before`).
"use strict";
(function () {
  const {el, clear, get, page, when, seconds, errorText} = window.UI;
  const form = document.getElementById("audit-filter");
  const more = document.getElementById("audit-more");
  const errorBox = document.getElementById("audit-error");
  let before = null;
  const LIMIT = /^[0-9]{1,3}$/.test(new URLSearchParams(window.location.search).get("limit") || "")
    ? new URLSearchParams(window.location.search).get("limit") : "50";

  function query() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) if (String(value).trim()) params.set(key, String(value).trim());
    params.set("limit", LIMIT);
    if (before) params.set("before", String(before));
    return params;
  }

  async function load(fresh) {
    if (fresh) before = null;
    const params = query();
    if (fresh) {
      const shown = new URLSearchParams(params);
      if (LIMIT === "50") shown.delete("limit");
      window.history.replaceState(null, "", window.location.pathname + (shown.toString() ? "?" + shown : ""));
    }
    const reply = await get(page("/audit?" + params));
    const body = document.querySelector("#audit tbody");
    if (fresh) clear(body);
    errorBox.hidden = reply.ok;
    if (!reply.ok) { errorBox.textContent = errorText(reply); more.hidden = true; return; }
    for (const r of reply.data.records) {
      const outcome = String(r.outcome || "");
      body.append(el("tr", {"data-id": r.id},
        el("td", {class: "nowrap", text: when(r.time)}), el("td", {text: r.kind}), el("td", {text: r.identity || ""}),
        el("td", {text: r.method || ""}), el("td", {text: r.route || ""}), el("td", {text: r.server || ""}),
        el("td", {text: r.name || ""}),
        el("td", {}, el("span", {class: "outcome outcome-" + outcome.replace(/[^a-z_]/g, ""), text: outcome + (r.error_code !== null && r.error_code !== undefined ? " " + r.error_code : "")})),
        el("td", {class: "num", text: seconds(r.duration)}), el("td", {class: "detail", text: r.detail || ""})));
    }
    if (fresh && !reply.data.records.length) body.append(el("tr", {}, el("td", {colspan: 10, class: "muted", text: "Nothing matches."})));
    before = reply.data.next;
    more.hidden = !before;
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  const asked = new URLSearchParams(window.location.search);
  for (const [key, value] of asked.entries()) if (key !== "limit" && form.elements[key]) form.elements[key].value = value;
  load(true);
})();
