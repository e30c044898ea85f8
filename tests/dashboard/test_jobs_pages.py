"""Signing in, the overview and the jobs pages, in a real browser.

Pinned: a person signs in with an API key (a bad key is refused with a message, and a
page asked for while signed out comes back after signing in); a job submitted through
the API appears in the open job list without a reload; the job page shows its input,
result, every decision and the state timeline; signing out ends the session.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import PHONE, screenshot, sign_in
from tests.dashboard.server import DashboardServer


def test_a_bad_key_is_refused_and_a_good_one_returns_to_the_page_asked_for(
    page: Page, server: DashboardServer
) -> None:
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=/jobs"))
    page.get_by_label("API key").fill("ck_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="unknown or revoked")).to_be_visible()
    screenshot(page, "sign-in")
    page.get_by_label("API key").fill(server.config.api_key or "")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def test_a_submitted_job_appears_live_and_its_page_tells_the_whole_story(
    page: Page, server: DashboardServer
) -> None:
    sign_in(page)
    page.goto("/jobs")
    expect(page.locator("#live-status")).to_have_text("live")
    with server.http() as http:
        answer = http.post(
            "/api/v1/jobs", json={"topic": "job.test.greet", "context": {"name": "Ada"}}
        )
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["job_id"]
        refused = http.post("/api/v1/jobs", json={"topic": "job.test.delete"})
        denied = refused.json()["rejection"]["job_id"]
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()  # no reload: the live stream brought it
    expect(row.locator(".badge").first).to_have_text("SUCCEEDED")
    expect(page.locator(f'tr[data-job="{denied}"] .badge').first).to_have_text("DENIED")
    screenshot(page, "jobs")

    row.get_by_role("link").click()
    expect(page.locator("#job-state")).to_have_text("SUCCEEDED")
    expect(page.locator("#job-input")).to_contain_text('"name": "Ada"')
    expect(page.locator("#job-result")).to_contain_text("job.test.greet")
    decisions = page.locator("#job-decisions")
    expect(decisions).to_contain_text("allow-test")
    expect(decisions).to_contain_text("dash-1:")
    timeline = page.locator("#job-timeline")
    for state in ("PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"):
        expect(timeline).to_contain_text(state)
    screenshot(page, "job")


def test_the_overview_counts_states_decisions_and_workers(
    page: Page, server: DashboardServer
) -> None:
    with server.http() as http:
        for topic in ("job.test.a", "job.test.delete", "job.test.admin"):
            assert http.post("/api/v1/jobs", json={"topic": topic}).status_code in (200, 202, 403)
    sign_in(page)
    expect(page.locator("#workers-online")).to_have_text("1")
    expect(page.locator("#pending-approvals")).to_have_text("1")
    totals = page.locator("#decision-totals")
    expect(totals.locator("tr", has_text="DENY").locator(".num")).to_have_text("1")
    expect(totals.locator("tr", has_text="REQUIRE_APPROVAL").locator(".num")).to_have_text("1")
    expect(page.locator("#job-states")).to_contain_text("DENIED")
    screenshot(page, "overview")
    page.set_viewport_size(PHONE)
    screenshot(page, "overview-phone")


def test_a_filter_narrows_the_list_and_a_bad_one_says_why(
    page: Page, server: DashboardServer
) -> None:
    with server.http() as http:
        http.post("/api/v1/jobs", json={"topic": "job.test.delete"})
        http.post("/api/v1/jobs", json={"topic": "job.test.keep"})
    sign_in(page)
    page.goto("/jobs")
    page.get_by_label("State").select_option("DENIED")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#job-list tbody tr")).to_have_count(1)
    expect(page.locator("#job-list")).to_contain_text("job.test.delete")
    page.goto("/jobs?state=NOPE")
    expect(page.get_by_role("alert").filter(has_text="state must be one of")).to_be_visible()


def test_signing_out_ends_the_session(page: Page, server: DashboardServer) -> None:
    sign_in(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next="))
