/* Cordum dashboard: live refresh over Server-Sent Events, and forms that call the JSON API.
 *
 * Pages are rendered on the server. This script does two things only:
 * - listens to /ui/events and, when something the page shows changed, fetches the page
 *   again and swaps its [data-live-region] parts (never one the person is typing in);
 * - sends forms marked data-api="METHOD /api/v1/..." to the JSON API as JSON, with the
 *   session's CSRF token, and shows the answer or the API's error message.
 */
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var pending = null;
  var refreshing = false;

  function wanted(kind, subject) {
    var kinds = (document.body.dataset.live || "").split(/\s+/).filter(Boolean);
    if (!kinds.length) return false;
    var matches = kinds.some(function (k) { return kind === k || kind.indexOf(k + ".") === 0; });
    if (!matches) return false;
    if (kind === "tick") return true;
    var scoped = document.querySelector("[data-live-region][data-subject]");
    return !scoped || !subject || scoped.dataset.subject === subject;
  }

  function editing(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /INPUT|TEXTAREA|SELECT/.test(active.tagName)) return true;
    return Array.prototype.some.call(region.querySelectorAll("input:not([type=hidden]), textarea"),
      function (field) { return field.value !== field.defaultValue; });
  }

  function refresh() {
    pending = null;
    if (refreshing) { pending = setTimeout(refresh, 300); return; }
    refreshing = true;
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected && /\/login/.test(response.url)) { location.reload(); return null; }
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-region][id]").forEach(function (region) {
          var next = fresh.getElementById(region.id);
          if (next && !editing(region)) region.replaceWith(document.importNode(next, true));
        });
        document.dispatchEvent(new CustomEvent("cordum:refreshed"));
      })
      .catch(function () { /* the next event tries again */ })
      .finally(function () { refreshing = false; });
  }

  function schedule() { if (!pending) pending = setTimeout(refresh, 150); }

  function listen() {
    var status = document.getElementById("live-status");
    if (!status || !window.EventSource) return;
    var source = new EventSource("/ui/events");
    source.onopen = function () { status.textContent = "live"; status.classList.add("on"); };
    source.onerror = function () { status.textContent = "reconnecting…"; status.classList.remove("on"); };
    source.addEventListener("change", function (message) {
      var event = JSON.parse(message.data);
      if (wanted(event.kind, event.subject)) schedule();
    });
  }

  function flash(text, ok) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.classList.toggle("ok", !!ok);
    box.hidden = false;
  }

  function body(form) {
    var data = {};
    new FormData(form).forEach(function (value, name) {
      var field = form.elements[name];
      if (field && field.dataset && field.dataset.json !== undefined) {
        data[name] = value.trim() ? JSON.parse(value) : null;
      } else if (value !== "") {
        data[name] = value;
      }
    });
    return data;
  }

  function errorText(answer, status) {
    if (answer && answer.error) {
      var detail = (answer.details || []).map(function (d) { return d.field + ": " + d.message; }).join("; ");
      return answer.error + (detail && answer.error.indexOf(detail) < 0 ? " (" + detail + ")" : "");
    }
    return "the server answered " + status;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || !form.dataset.api) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var parts = form.dataset.api.split(" ");
    var out = form.querySelector(".result");
    var button = form.querySelector("button[type=submit]");
    var payload;
    try { payload = body(form); } catch (problem) {
      if (out) { out.textContent = "Not valid JSON: " + problem.message; out.className = "result error"; }
      return;
    }
    if (button) button.disabled = true;
    if (out) { out.textContent = "working…"; out.className = "result"; }
    var url = parts[1];
    if (parts[0] === "GET") {  // a GET has no body: its fields go in the query string
      var query = new URLSearchParams(payload).toString();
      if (query) url += (url.indexOf("?") < 0 ? "?" : "&") + query;
    }
    fetch(url, {
      method: parts[0], credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: parts[0] === "GET" ? undefined : JSON.stringify(payload)
    }).then(function (response) {
      return response.text().then(function (text) {
        var answer = null;
        try { answer = text ? JSON.parse(text) : {}; } catch (ignored) { answer = null; }
        if (!response.ok) throw new Error(errorText(answer, response.status));
        return answer || {};
      });
    }).then(function (answer) {
      var then = form.dataset.then || "";
      var done = form.dataset.done || "Done.";
      if (then === "reload") {
        sessionStorage.setItem("cordum-flash", done);
        location.reload();
      } else if (then.indexOf("render:") === 0) {
        var render = window.cordumRender && window.cordumRender[then.slice(7)];
        if (render) render(form, answer);
        if (out) { out.textContent = ""; }
      } else if (out) {
        out.textContent = done; out.className = "result ok";
      }
    }).catch(function (problem) {
      if (out) { out.textContent = problem.message; out.className = "result error"; }
      else flash(problem.message, false);
    }).finally(function () { if (button) button.disabled = false; });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var kept = sessionStorage.getItem("cordum-flash");
    if (kept) { sessionStorage.removeItem("cordum-flash"); flash(kept, true); }
    listen();
  });
  window.cordumRender = window.cordumRender || {};
})();
