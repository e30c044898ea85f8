/* Cordum dashboard, policy page: renders the answers of the simulator, of publish and of
 * rollback. Built with DOM calls and textContent only: rule ids, reasons and inputs are
 * whatever the policy and the person typed, never markup.
 */
(function () {
  "use strict";

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function badge(decision) {
    return el("span", decision, "badge decision-" + String(decision).toLowerCase());
  }

  function facts(pairs) {
    var list = el("dl", null, "facts");
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      list.appendChild(el("dt", pair[0]));
      var value = el("dd");
      if (pair[1] instanceof Node) value.appendChild(pair[1]); else value.textContent = String(pair[1]);
      list.appendChild(value);
    });
    return list;
  }

  function remediations(items) {
    if (!items || !items.length) return null;
    var list = el("ul", null, "remediations");
    items.forEach(function (item) {
      var line = el("li");
      line.appendChild(el("strong", item.title));
      line.appendChild(document.createTextNode(" "));
      line.appendChild(el("code", item.id));
      if (item.replacement_topic) line.appendChild(document.createTextNode(" → " + item.replacement_topic));
      if (item.summary) line.appendChild(el("div", item.summary, "muted"));
      list.appendChild(line);
    });
    return list;
  }

  function trace(title, id, rows) {
    var section = el("section");
    section.appendChild(el("h3", title));
    var table = el("table", null, "list trace");
    table.id = id;
    var head = el("thead");
    var names = el("tr");
    ["#", "Rule", "Decision", "Outcome", "Detail", "Source"].forEach(function (name) {
      var cell = el("th", name);
      cell.scope = "col";
      names.appendChild(cell);
    });
    head.appendChild(names);
    table.appendChild(head);
    var body = el("tbody");
    rows.forEach(function (rule) {
      var row = el("tr", null, "outcome-" + rule.outcome);
      row.appendChild(el("td", rule.position + 1));
      var ruleCell = el("td");
      ruleCell.appendChild(el("code", rule.rule_id));
      row.appendChild(ruleCell);
      var decision = el("td");
      decision.appendChild(badge(rule.decision));
      row.appendChild(decision);
      row.appendChild(el("td", rule.outcome.replace(/_/g, " "), rule.outcome === "selected" ? "chosen" : ""));
      row.appendChild(el("td", [rule.failed_field, rule.detail].filter(Boolean).join(": ")));
      row.appendChild(el("td", rule.source || ""));
      body.appendChild(row);
    });
    table.appendChild(body);
    section.appendChild(table);
    return section;
  }

  window.cordumRender = window.cordumRender || {};

  /* POST /api/v1/policy/explain: the verdict, then each rule's line of the trace. */
  window.cordumRender.simulate = function (form, answer) {
    var box = document.getElementById("simulate-result");
    if (!box) return;
    box.replaceChildren();
    var verdict = el("section", null, "verdict");
    var heading = el("h3", "Verdict ");
    heading.appendChild(badge(answer.decision));
    verdict.appendChild(heading);
    var constraints = answer.constraints && Object.keys(answer.constraints).length
      ? el("pre", JSON.stringify(answer.constraints, null, 2)) : null;
    verdict.appendChild(facts([
      ["Rule", answer.rule_id || (answer.default_applied ? "none matched: the default decision" : "")],
      ["Reason", answer.reason],
      ["Snapshot", answer.policy_snapshot],
      ["Retry after", answer.retry_after_seconds ? answer.retry_after_seconds + " s" : ""],
      ["Findings", (answer.findings || []).join(", ")],
      ["Constraints", constraints],
      ["Remediations", remediations(answer.remediations)]
    ]));
    box.appendChild(verdict);
    if (answer.input_trace && answer.input_trace.length) {
      box.appendChild(trace("Input rules", "simulate-input-trace", answer.input_trace));
    }
    box.appendChild(trace("Trace", "simulate-trace", answer.trace || []));
  };

  /* POST /api/v1/policy/publish and /rollback: say what happened, then show the new state. */
  window.cordumRender.activation = function (form, answer) {
    var snapshot = answer.snapshot || {};
    var what = answer.status === "unchanged"
      ? "Nothing changed: v" + snapshot.version + " is already the active policy."
      : "v" + snapshot.version + " is now the active policy (" + answer.status.replace(/_/g, " ") + ").";
    sessionStorage.setItem("cordum-flash", what);
    location.reload();
  };
})();
