"""The audit, workers and dead-letter queue pages, in a real browser.

Pinned: the audit page lists a chain's events as they happen (job ids link to the job)
and narrows them by kind; its "Verify chain" button reports the chain intact with the
number of events checked, and names the broken event once a row is altered in the
database; a key without the audit permission gets the 403 page. The workers page shows
the test worker online with its pool and topics. A dead-lettered job can be retried (a
new job is submitted, the entry goes) and another entry deleted, from the browser;
a read-only key sees the queue without those buttons.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from cordum.dashboard import routes_audit, routes_ops
from cordum.ports.sqlite_store import SqliteStore
from tests.dashboard.conftest import screenshot, sign_in
from tests.dashboard.server import FAILING_TOPIC, DashboardServer


def submit(server: DashboardServer, topic: str = "job.test.greet") -> str:
    """Submit a job through the API and wait until it ends; its id."""
    with server.http() as http:
        answer = http.post("/api/v1/jobs", json={"topic": topic, "context": {"n": 1}})
        assert answer.status_code == 200, answer.text
        job_id = str(answer.json()["job_id"])
        ended = http.get(f"/api/v1/jobs/{job_id}", params={"wait": 10}).json()
        assert ended["state"] in ("SUCCEEDED", "FAILED"), ended
    return job_id


def chain_report(server: DashboardServer) -> dict[str, Any]:
    """The default chain's verification, as the API reports it."""
    with server.http() as http:
        answer = http.get("/api/v1/audit/verify", params={"tenant": "default"})
        assert answer.status_code == 200, answer.text
        (chain,) = answer.json()["chains"]
    return dict(chain)


def test_verify_chain_reports_the_chain_intact_with_the_events_checked(
    page: Page, server: DashboardServer
) -> None:
    job_id = submit(server)
    expected = chain_report(server)
    assert expected["ok"]
    assert expected["checked"] > 0
    sign_in(page)
    page.goto("/audit")
    expect(page.get_by_role("heading", name="Audit")).to_be_visible()
    expect(page.locator("#audit-events")).to_contain_text(job_id[:12])
    screenshot(page, "audit")

    page.get_by_role("button", name="Verify chain").click()
    report = page.locator("#verify-report")
    expect(report.locator("[data-verified]")).to_have_attribute("data-verified", "ok")
    expect(report).to_contain_text("Chain default verified.")
    expect(report).to_contain_text(f"{expected['checked']} events checked")
    screenshot(page, "audit-verified")


def test_verify_chain_names_the_event_altered_in_the_database(
    page: Page, server: DashboardServer
) -> None:
    submit(server)
    store = server.plane.store
    assert isinstance(store, SqliteStore)

    async def tamper() -> None:
        # The first event is the job's creation (to PENDING); claim it started SUCCEEDED.
        store._db.execute(
            "UPDATE audit_events SET body = replace(body, 'PENDING', 'SUCCEEDED')"
            " WHERE tenant_id = 'default' AND seq = 1"
        )

    server.call(tamper())
    sign_in(page)
    page.goto("/audit")
    page.get_by_role("button", name="Verify chain").click()
    report = page.locator("#verify-report")
    expect(report.locator("[data-verified]")).to_have_attribute("data-verified", "compromised")
    expect(report).to_contain_text("Chain default is compromised.")
    expect(report).to_contain_text("Event 1 is modified")


def test_the_audit_list_follows_new_events_and_filters_by_kind(
    page: Page, server: DashboardServer
) -> None:
    sign_in(page)
    page.goto("/audit")
    expect(page.locator("#live-status")).to_have_text("live")
    job_id = submit(server)
    events = page.locator("#audit-events")
    link = events.get_by_role("link", name=job_id[:12]).first
    expect(link).to_be_visible()  # no reload: the live stream brought it
    expect(events).to_contain_text("job.transition")
    expect(events).to_contain_text('"to":"SUCCEEDED"')

    page.get_by_label("Kind").fill("decision")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"kind=decision"))
    kinds = page.locator("#audit-events tbody tr td:nth-child(3)")
    expect(kinds.first).to_have_text("decision")
    for text in kinds.all_inner_texts():
        assert text == "decision"
    expect(events).to_contain_text("allow-test")

    events.get_by_role("link", name=job_id[:12]).first.click()
    expect(page).to_have_url(re.compile(rf"/jobs/{job_id}$"))


def test_the_audit_page_opens_on_the_latest_events_and_pages_back(
    page: Page, server: DashboardServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_audit, "PAGE_SIZE", 3)
    submit(server)
    head = chain_report(server)["last_seq"]
    sign_in(page)
    page.goto("/audit")
    seqs = page.locator("#audit-events tbody td:first-child")
    expect(seqs).to_have_text([str(n) for n in range(head - 2, head + 1)])
    page.get_by_role("link", name="← Older events").click()
    expect(seqs).to_have_text([str(n) for n in range(head - 5, head - 2)])
    page.get_by_role("link", name="Newer events →").click()
    expect(seqs).to_have_text([str(n) for n in range(head - 2, head + 1)])
    page.get_by_role("link", name="Latest events").click()
    expect(page).to_have_url(re.compile(r"/audit\?tenant=default$"))


def test_a_key_without_the_audit_permission_gets_the_403_page(
    page: Page, server: DashboardServer
) -> None:
    sign_in(page, server.new_key("agent", "an agent"))
    answer = page.goto("/audit")
    assert answer is not None
    assert answer.status == 403
    expect(page.get_by_role("heading", name="403: Not allowed")).to_be_visible()


def test_the_workers_page_shows_the_test_worker_online(page: Page, server: DashboardServer) -> None:
    sign_in(page)
    page.goto("/workers")
    row = page.locator("#worker-list tbody tr").first
    expect(row.locator(".badge").first).to_have_text("live")
    expect(row).to_contain_text("dash")
    expect(row).to_contain_text("job.test.*")
    expect(row).to_contain_text("http")
    expect(row).to_contain_text(re.compile(r"\d+ s ago"))
    expect(page.locator("#workers-summary")).to_contain_text("1 of 1 worker online")
    screenshot(page, "workers")


def test_a_dead_letter_is_retried_and_another_deleted_in_the_browser(
    page: Page, server: DashboardServer
) -> None:
    first, second = submit(server, FAILING_TOPIC), submit(server, FAILING_TOPIC)
    sign_in(page)
    page.goto("/dlq")
    rows = page.locator("#dlq-list tbody tr")
    expect(rows).to_have_count(2)
    entry = page.locator(f'tr[data-job="{first}"]')
    expect(entry).to_contain_text("max_retries_exceeded")
    expect(entry).to_contain_text("the test worker fails this topic for good")
    screenshot(page, "dlq")

    entry.get_by_role("button", name="Retry").click()
    retried = page.locator("#retried-job")
    expect(retried).to_be_visible()
    new_id = retried.inner_text()
    assert new_id != first
    expect(entry).to_have_count(0)
    # The new job fails too, so it comes back to the queue under its own id (live).
    expect(page.locator(f'tr[data-job="{new_id}"]')).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'tr[data-job="{second}"]').get_by_role("button", name="Delete").click()
    expect(page.locator("#flash")).to_have_text(f"Deleted the DLQ entry of job {second}.")
    expect(page.locator(f'tr[data-job="{second}"]')).to_have_count(0)
    expect(rows).to_have_count(1)
    with server.http() as http:
        jobs = http.get(f"/api/v1/jobs/{new_id}").json()
    assert jobs["topic"] == FAILING_TOPIC


def test_a_read_only_key_pages_through_the_queue_without_retry_or_delete(
    page: Page, server: DashboardServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_ops, "DLQ_PAGE_SIZE", 1)
    older, newer = submit(server, FAILING_TOPIC), submit(server, FAILING_TOPIC)
    sign_in(page, server.new_key("viewer", "a viewer"))
    page.goto("/dlq")
    rows = page.locator("#dlq-list tbody tr")
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{newer}"]')).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    page.get_by_role("link", name="Older entries →").click()
    expect(page.locator(f'tr[data-job="{older}"]')).to_be_visible()
    expect(rows).to_have_count(1)
