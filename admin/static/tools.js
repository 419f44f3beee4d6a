// The tools page: a search box that hides what does not match (every word must match).
"use strict";
(function () {
  const input = document.getElementById("search");
  const count = document.getElementById("search-count");
  const entries = Array.from(document.querySelectorAll(".searchable"));
  const haystacks = entries.map((e) => e.textContent.toLowerCase());

  function filter() {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    entries.forEach((entry, i) => {
      const match = words.every((w) => haystacks[i].includes(w));
      entry.hidden = !match;
      if (match) shown++;
    });
    for (const section of document.querySelectorAll("section.route")) {
      section.hidden = words.length > 0 && !section.querySelector(".searchable:not([hidden])");
    }
    count.textContent = words.length ? shown + " of " + entries.length : entries.length + " entries";
    document.getElementById("no-match").hidden = shown > 0 || !words.length;
  }

  input.addEventListener("input", filter);
  const asked = new URLSearchParams(window.location.search).get("q");
  if (asked) input.value = asked;
  filter();
})();
