// CellTrail bench helpers. The server checks everything again; this only helps people typing.
(function () {
  "use strict";

  // A keyboard-wedge scanner types the code and presses Enter: in a scan field, Enter moves
  // to the next field instead of submitting a half-filled form.
  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (event.key !== "Enter" || !input.matches || !input.matches("input[data-scan]")) return;
    event.preventDefault();
    var fields = Array.prototype.slice.call(input.form.querySelectorAll("input, select, textarea, button"))
      .filter(function (el) { return el.type !== "hidden" && !el.disabled; });
    var next = fields[fields.indexOf(input) + 1];
    if (next) next.focus();
  });

  // Limits checked as they are typed: an out-of-limit value is said in words at once.
  function check(input) {
    var out = input.parentNode.querySelector(".live-check");
    if (!out) return;
    var text = input.value.trim().replace(new RegExp("\\s*" + (input.dataset.unit || "").replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$"), "");
    out.textContent = "";
    if (!text) return;
    var value = Number(text);
    if (!isFinite(value) || !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text)) {
      out.textContent = "Not a number: use digits, a dot for decimals, e.g. 1.2e9.";
      return;
    }
    var d = input.dataset, unit = d.unit ? " " + d.unit : "";
    if ((d.validMin && value < Number(d.validMin)) || (d.validMax && value > Number(d.validMax))) {
      out.textContent = "Impossible value: it will be refused.";
    } else if (d.limitMin && value < Number(d.limitMin)) {
      out.textContent = "Below the limit of " + d.limitMin + unit + ": a comment will be required and a deviation opened.";
    } else if (d.limitMax && value > Number(d.limitMax)) {
      out.textContent = "Above the limit of " + d.limitMax + unit + ": a comment will be required and a deviation opened.";
    }
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("input[inputmode=decimal]")) check(event.target);
  });

  // A form is sent once: a second click or Enter while the first is on its way is ignored
  // (the server refuses a stale copy anyway, with its batch version). Coming back with the
  // back button shows the page from the cache: let it be sent again then.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.method.toLowerCase() !== "post") return;
    if (form.dataset.sending) { event.preventDefault(); return; }
    form.dataset.sending = "1";
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit], button:not([type])"), function (b) {
      b.setAttribute("aria-busy", "true");
    });
  });
  // "Go back" on a refusal: the page before, kept with what was typed (a javascript: link
  // would be blocked by the Content-Security-Policy; without script the link opens the dashboard).
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-back]");
    if (!link || window.history.length < 2) return;
    event.preventDefault();
    window.history.back();
  });
  window.addEventListener("pageshow", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-sending]"), function (form) {
      delete form.dataset.sending;
      Array.prototype.forEach.call(form.querySelectorAll("[aria-busy]"), function (b) { b.removeAttribute("aria-busy"); });
    });
  });
})();
