// sqskit console: the page's only script (served from the binary; the CSP allows no other).
// - [data-refresh]: replace the element's content with the server-rendered fragment at that URL
//   every data-every ms (default 3000); a fragment holding [data-done] stops the refresh.
// - textarea[data-json-check]: say whether the body parses as JSON while the JSON box is ticked.
// - input[data-select-all=NAME]: tick or untick every checkbox NAME of its form.
"use strict";

function refresh(el) {
  const url = el.getAttribute("data-refresh");
  const every = parseInt(el.getAttribute("data-every") || "3000", 10);
  let timer = null;
  async function tick() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (resp.ok) {
        el.innerHTML = await resp.text();
        el.removeAttribute("data-stale");
      } else {
        el.setAttribute("data-stale", String(resp.status));
      }
    } catch (e) {
      el.setAttribute("data-stale", "unreachable");
    }
    if (el.querySelector("[data-done]")) {
      clearInterval(timer);
    }
  }
  if (!el.querySelector("[data-done]")) {
    timer = setInterval(tick, every);
  }
}

function jsonCheck(area) {
  const state = document.getElementById(area.getAttribute("aria-describedby"));
  const box = document.getElementById(area.getAttribute("data-json-check"));
  function check() {
    if (!state) return;
    if (box && !box.checked) {
      state.textContent = "";
      area.removeAttribute("aria-invalid");
      return;
    }
    try {
      JSON.parse(area.value);
      state.textContent = "valid JSON";
      area.removeAttribute("aria-invalid");
    } catch (e) {
      state.textContent = "not valid JSON: " + e.message;
      area.setAttribute("aria-invalid", "true");
    }
  }
  area.addEventListener("input", check);
  if (box) box.addEventListener("change", check);
  check();
}

function selectAll(box) {
  const name = box.getAttribute("data-select-all");
  box.addEventListener("change", function () {
    const form = box.closest("form");
    if (!form) return;
    form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (c) {
      c.checked = box.checked;
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  document.querySelectorAll("textarea[data-json-check]").forEach(jsonCheck);
  document.querySelectorAll("input[data-select-all]").forEach(selectAll);
});
