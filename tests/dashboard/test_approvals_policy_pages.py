"""The approvals and policy pages, in a real browser.

Pinned: an approver approves a waiting job from the queue and it runs to SUCCEEDED; a
rejection needs a reason and ends the job DENIED with that reason shown; the queue drops
an item without a reload when another approver acts through the API; nobody is offered
approve or reject on their own request; the simulator shows DENY by ``no-delete`` with
the trace; an admin rolls back to an earlier snapshot and the page shows it active; the
diff page marks a changed line; publish and rollback are not offered to non-admins.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import PHONE, screenshot, sign_in
from tests.dashboard.server import DashboardServer

EXTRA_RULE = """\
rules:
  - id: no-archive
    match: {topics: ["job.test.archive"]}
    decision: deny
    reason: archiving is paused
"""


def submit_for_approval(server: DashboardServer, **fields: Any) -> str:
    """A ``job.test.admin`` job (REQUIRE_APPROVAL), submitted with the admin key."""
    with server.http() as http:
        answer = http.post("/api/v1/jobs", json={"topic": "job.test.admin", **fields})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "approval_required"
    return str(answer.json()["job_id"])


def publish_second_snapshot(server: DashboardServer) -> None:
    """v2: the drafts plus a bundle with one more rule, published through the API."""
    with server.http() as http:
        put = http.put(
            "/api/v1/policy/bundles/extra",
            content=EXTRA_RULE,
            headers={"Content-Type": "application/yaml"},
        )
        assert put.status_code == 201, put.text
        published = http.post("/api/v1/policy/publish", json={"message": "pause archiving"})
        assert published.status_code == 201, published.text
        assert published.json()["snapshot"]["version"] == 2


def test_an_approver_approves_a_waiting_job_and_it_runs(
    page: Page, server: DashboardServer
) -> None:
    job_id = submit_for_approval(
        server, context={"user": "ada", "grant": "admin"}, labels={"env": "prod"}
    )
    sign_in(page, server.new_key("operator", "alice"))
    page.goto("/approvals")
    item = page.locator(f"#approval-{job_id}")
    expect(item).to_contain_text("job.test.admin")
    expect(item).to_contain_text("admin-approval")  # the rule that asked
    expect(item).to_contain_text("admin changes need a human")  # and why
    expect(item).to_contain_text("env=prod")
    expect(item.locator(".approval-input")).to_contain_text('"grant": "admin"')
    screenshot(page, "approvals")
    page.set_viewport_size(PHONE)
    screenshot(page, "approvals-phone")

    item.get_by_label("Reason").first.fill("checked with Ada")
    item.get_by_role("button", name="Approve").click()

    expect(page.locator("#flash")).to_contain_text("Approved job.test.admin")
    expect(page.locator(f"#approval-{job_id}")).to_have_count(0)
    resolved = page.locator("#resolved-list").locator(f'tr[data-job="{job_id}"]')
    expect(resolved).to_contain_text("approved")
    expect(resolved).to_contain_text("alice")
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("SUCCEEDED")
    expect(page.locator("#job-decisions")).to_contain_text("approved by alice: checked with Ada")


def test_a_rejection_needs_a_reason_and_ends_the_job_denied(
    page: Page, server: DashboardServer
) -> None:
    job_id = submit_for_approval(server)
    sign_in(page, server.new_key("operator", "alice"))
    page.goto("/approvals")
    item = page.locator(f"#approval-{job_id}")
    reject = item.get_by_role("button", name="Reject")
    reject.click()  # no reason: the browser refuses to send the form
    expect(item.get_by_label("Why reject")).to_have_js_property("validity.valueMissing", True)
    expect(item).to_be_visible()

    item.get_by_label("Why reject").fill("not during the freeze")
    reject.click()

    expect(page.locator("#flash")).to_contain_text("Rejected job.test.admin")
    expect(page.locator(f"#approval-{job_id}")).to_have_count(0)
    resolved = page.locator("#resolved-list").locator(f'tr[data-job="{job_id}"]')
    expect(resolved).to_contain_text("rejected")
    expect(resolved).to_contain_text("not during the freeze")
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("DENIED")
    expect(page.locator("#job-error")).to_contain_text("not during the freeze")
    assert server.call(server.plane.store.get_job(job_id)).state.value == "DENIED"


def test_the_queue_updates_live_when_another_approver_acts(
    page: Page, server: DashboardServer
) -> None:
    first = submit_for_approval(server, context={"n": 1})
    second = submit_for_approval(server, context={"n": 2})
    sign_in(page, server.new_key("operator", "alice"))
    page.goto("/approvals")
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator(f"#approval-{first}")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    with server.http(server.new_key("operator", "bob")) as bob:
        answer = bob.post(f"/api/v1/approvals/{first}/approve", json={"reason": "bob looked"})
    assert answer.status_code == 200, answer.text

    expect(page.locator(f"#approval-{first}")).to_have_count(0)
    expect(page.locator(f"#approval-{second}")).to_be_visible()
    expect(page.locator(f'#resolved-list tr[data-job="{first}"]')).to_contain_text("bob")
    assert page.evaluate("window.notReloaded") is True  # swapped in place, not reloaded


def test_nobody_is_offered_a_decision_on_their_own_request(
    page: Page, server: DashboardServer
) -> None:
    job_id = submit_for_approval(server)  # with the admin key
    sign_in(page)  # the same admin key
    page.goto("/approvals")
    item = page.locator(f"#approval-{job_id}")
    expect(item).to_contain_text("You requested this; another approver must decide.")
    expect(item.get_by_role("button")).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server.new_key("viewer", "vic"))
    page.goto("/approvals")
    expect(page.locator(f"#approval-{job_id}")).to_be_visible()
    expect(page.locator(f"#approval-{job_id}").get_by_role("button")).to_have_count(0)
    expect(page.get_by_text("may not approve or reject")).to_be_visible()


def test_the_simulator_shows_the_verdict_and_the_trace(page: Page, server: DashboardServer) -> None:
    sign_in(page)
    page.goto("/policy")
    form = page.locator("#simulate")
    form.get_by_label("Topic").fill("job.test.delete")
    form.get_by_label("Input").fill('{"path": "/"}')
    form.get_by_role("button", name="Simulate").click()

    result = page.locator("#simulate-result")
    expect(result.locator(".verdict .badge")).to_have_text("DENY")
    expect(result.locator(".verdict")).to_contain_text("no-delete")
    expect(result.locator(".verdict")).to_contain_text("deleting is not allowed")
    chosen = result.locator("#simulate-trace tr.outcome-selected")
    expect(chosen).to_have_count(1)
    expect(chosen).to_contain_text("no-delete")
    expect(result.locator("#simulate-trace tbody tr")).to_have_count(3)
    result.scroll_into_view_if_needed()
    screenshot(page, "simulate")

    form.get_by_label("Labels").fill("{not json")
    form.get_by_role("button", name="Simulate").click()
    expect(form.locator(".result")).to_contain_text("Not valid JSON")


def test_an_admin_rolls_back_to_an_earlier_snapshot(page: Page, server: DashboardServer) -> None:
    publish_second_snapshot(server)
    sign_in(page)
    page.goto("/policy")
    expect(page.locator("#active-version")).to_have_text("v2")
    expect(page.locator("#active-rules")).to_contain_text("no-archive")
    expect(page.locator("#drafts-state")).to_contain_text("publishing would change nothing")
    screenshot(page, "policy")

    page.once("dialog", lambda dialog: dialog.accept())
    row = page.locator('#snapshot-list tr[data-version="1"]')
    row.get_by_label("Why roll back to v1").fill("archiving is fine again")
    row.get_by_role("button", name="Roll back to v1").click()

    expect(page.locator("#flash")).to_contain_text("v1 is now the active policy (rolled back)")
    expect(page.locator("#active-version")).to_have_text("v1")
    expect(page.locator("#active-rules")).not_to_contain_text("no-archive")
    expect(page.locator('#snapshot-list tr[data-version="1"]')).to_contain_text("active")
    active = server.call(server.plane.store.active_policy_snapshot())
    assert active.version == 1


def test_the_diff_marks_what_changed_between_snapshots(page: Page, server: DashboardServer) -> None:
    publish_second_snapshot(server)
    sign_in(page)
    page.goto("/policy")
    page.get_by_role("link", name="v1 → v2").click()
    expect(page).to_have_url(re.compile(r"/policy/diff\?left=1&right=2$"))
    diff = page.locator("#policy-diff")
    added = diff.locator("td.ins")
    expect(added.filter(has_text="id: no-archive")).to_have_count(1)
    expect(added.filter(has_text="── bundle extra ──")).to_have_count(1)
    expect(diff.locator("td.del")).to_have_count(0)  # v2 only adds
    screenshot(page, "policy-diff")

    page.goto("/policy/diff?left=1&right=9")
    expect(page.get_by_role("alert")).to_contain_text("9")


def test_publish_and_rollback_are_for_policy_admins_only(
    page: Page, server: DashboardServer
) -> None:
    publish_second_snapshot(server)
    sign_in(page, server.new_key("operator", "olga"))
    page.goto("/policy")
    expect(page.locator("#active-version")).to_have_text("v2")
    expect(page.locator("#active-rules")).to_contain_text("no-archive")  # operators read text
    expect(page.get_by_role("button", name="Simulate")).to_be_visible()
    expect(page.get_by_role("button", name="Publish drafts")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)
