// CellTrail bench helpers. The server checks everything again; this only helps people typing.
(function () {
  "use strict";

  // == focus and refusals ==
  // Focus goes where the next keystroke belongs: gloved hands and a keyboard-wedge scanner
  // (it types the code and presses Enter) cannot click into a field first.

  // The fields a person fills in, in order: not hidden, disabled, read-only or marked
  // data-focus-skip (an optional comment); a radio group counts once, by its first button.
  function fillable(form) {
    var seen = {};
    return Array.prototype.filter.call(form.querySelectorAll("input, select, textarea"), function (el) {
      if (el.disabled || el.readOnly || el.hasAttribute("data-focus-skip") || !el.getClientRects().length) return false;
      if (/^(hidden|submit|button|reset|checkbox|file|image)$/.test(el.type)) return false;
      if (el.type === "radio") {
        if (seen[el.name]) return false;
        seen[el.name] = true;
      }
      return true;
    });
  }
  function isEmpty(el) {
    if (el.type === "radio") {
      return !Array.prototype.some.call(el.form.elements, function (r) { return r.name === el.name && r.checked; });
    }
    return !el.value.trim();
  }
  // The first empty field after ``from`` (or from the start), wrapping round to those before it.
  function nextEmpty(form, from) {
    var fields = fillable(form), start = from ? fields.indexOf(from) + 1 : 0;
    var order = fields.slice(start).concat(fields.slice(0, start));
    for (var i = 0; i < order.length; i++) { if (order[i] !== from && isEmpty(order[i])) return order[i]; }
    return null;
  }

  // A page that comes back refused: the first field with an error has the focus (over the
  // scan box's autofocus). A step form that opens: its first empty field.
  function focusOnOpen() {
    var refused = document.querySelector("main [aria-invalid=true], main .has-error input:not([type=hidden]), " +
                                         "main .has-error select, main .has-error textarea");
    if (refused) { refused.focus(); return; }
    var form = document.querySelector("form[data-focus=first-empty]");
    var first = form && nextEmpty(form, null);
    if (first) first.focus();
  }
  focusOnOpen();

  // Enter in a scan field (the wedge's Enter) moves to the next EMPTY field instead of sending a
  // half-filled form; with none left, to the form's button.
  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (event.key !== "Enter" || !input.matches || !input.matches("input[data-scan]")) return;
    event.preventDefault();
    var next = nextEmpty(input.form, input) || input.form.querySelector("button[type=submit], button:not([type])");
    if (next) next.focus();
  });

  // The scan box asks the server first (JSON): a code it opens is opened; a refusal is said
  // under the box, whose text is selected so that the next scan replaces it. Without script,
  // or when the answer is not the scan box's JSON (signed out...), the form is sent as it is.
  var box = document.getElementById("scan-code"), said = document.getElementById("scan-refusal");
  if (box && said && box.form && window.fetch) {
    var scanForm = box.form, asking = false;
    scanForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (asking) return;
      asking = true;
      said.textContent = "";
      fetch(scanForm.action + "?code=" + encodeURIComponent(box.value), {
        headers: {Accept: "application/json"}, credentials: "same-origin"
      }).then(function (response) {
        if ((response.headers.get("Content-Type") || "").indexOf("application/json") !== 0) throw new Error("not JSON");
        return response.json();
      }).then(function (answer) {
        if (answer.location) { window.location.assign(answer.location); return; }
        if (!answer.refusal) throw new Error("no answer");
        asking = false;
        said.textContent = answer.refusal;
        box.focus();
        box.select();
      }).catch(function () { scanForm.submit(); });
    });
    box.addEventListener("input", function () { said.textContent = ""; });
    window.addEventListener("pageshow", function () { asking = false; });  // back from the page it opened
  }
  // == end focus and refusals ==

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
    // The attribute, not form.method: a field named "method" would hide the property.
    if ((form.getAttribute("method") || "get").toLowerCase() !== "post") return;
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

  // The header's menus (details elements, so they work without script) close on a click
  // elsewhere or on Escape, as menus do.
  function closeMenus(except) {
    Array.prototype.forEach.call(document.querySelectorAll(".topbar details[open]"), function (menu) {
      if (!menu.contains(except)) menu.removeAttribute("open");
    });
  }
  document.addEventListener("click", function (event) { closeMenus(event.target); });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || !document.querySelector(".topbar details[open]")) return;
    var summary = event.target.closest && event.target.closest(".topbar details") ?
      event.target.closest(".topbar details").querySelector("summary") : null;
    closeMenus(null);
    if (summary) summary.focus();
  });
})();
