"""The dashboard's session rules, its live feed and its chart, without a browser.

Pinned: the session cookie stands in for the key on page reads only, and for the JSON
API only with the session's CSRF token (a cross-site form cannot send one); a revoked
key's session is over at once; sign-in never redirects off the site; the live feed
tails every chain and shows each viewer only their tenants' events; the chart buckets
the hour by five minutes and counts fail-open passes apart.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cordum.api.session import COOKIE, csrf_token
from cordum.dashboard.chart import BUCKET_S, decision_chart, window_start
from cordum.dashboard.live import LiveFeed
from cordum.dashboard.routes_session import local_target
from cordum.models import Decision
from cordum.models.audit import AuditDraft
from cordum.models.keys import Principal, Role
from cordum.ports import DecisionCount
from cordum.ports.sqlite_store import SqliteStore
from tests.dashboard.server import DashboardServer
from tests.pipeline.harness import ADMIN_KEY

JOB = {"topic": "job.test.session"}


def session(server: DashboardServer, key: str = ADMIN_KEY) -> httpx.Client:
    """A client holding only the session cookie, as a browser does."""
    return httpx.Client(base_url=server.url, cookies={COOKIE: key}, timeout=10)


def test_the_cookie_alone_reads_pages_but_never_calls_the_api(server: DashboardServer) -> None:
    with session(server) as browser:
        assert browser.get("/jobs").status_code == 200
        assert browser.get("/api/v1/jobs").status_code == 401
        assert browser.post("/api/v1/jobs", json=JOB).status_code == 401
        wrong = {"X-CSRF-Token": csrf_token("another-key")}
        assert browser.post("/api/v1/jobs", json=JOB, headers=wrong).status_code == 401
        right = {"X-CSRF-Token": csrf_token(ADMIN_KEY)}
        assert browser.post("/api/v1/jobs", json=JOB, headers=right).status_code == 200


def test_signing_in_sets_a_strict_httponly_cookie_and_stays_on_the_site(
    server: DashboardServer,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        answer = browser.post("/login", data={"key": ADMIN_KEY, "next": "//evil.example/x"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        refused = browser.post("/login", data={"key": "ck_nope", "next": "/jobs"})
        assert refused.status_code == 401
        assert "unknown or revoked" in refused.text


def test_sign_out_needs_the_csrf_token(server: DashboardServer) -> None:
    with session(server) as browser:
        assert browser.post("/logout", data={"csrf": "forged"}).status_code == 403
        answer = browser.post("/logout", data={"csrf": csrf_token(ADMIN_KEY)})
        assert answer.status_code == 303
        assert COOKIE in answer.headers["set-cookie"]


def test_a_revoked_keys_session_ends_at_once(server: DashboardServer) -> None:
    key = server.new_key("viewer", "revoked-soon")
    with session(server, key) as browser:
        assert browser.get("/jobs").status_code == 200
        with server.http() as admin:
            key_id = next(
                k["key_id"]
                for k in admin.get("/api/v1/keys").json()["keys"]
                if k["name"] == "revoked-soon"
            )
            assert admin.delete(f"/api/v1/keys/{key_id}").status_code in (200, 204)
        answer = browser.get("/jobs")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login")


def test_pages_report_their_server_time(server: DashboardServer) -> None:
    with session(server) as browser:
        for path in ("/", "/jobs"):
            assert browser.get(path).headers["server-timing"].startswith("app;dur=")


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        (None, "/"),
        ("/jobs?state=FAILED", "/jobs?state=FAILED"),
        ("//evil", "/"),
        ("https://x", "/"),
    ],
)
def test_sign_in_goes_back_only_to_a_local_page(asked: str | None, goes_to: str) -> None:
    assert local_target(asked) == goes_to


def test_the_chart_buckets_by_five_minutes_and_counts_fail_open_apart() -> None:
    now = 1_800_000_000.0
    start = window_start(now)
    counts = [
        DecisionCount(minute=int(start), decision=Decision.ALLOW, fail_open=False, count=3),
        DecisionCount(minute=int(start) + 60, decision=Decision.ALLOW, fail_open=True, count=2),
        DecisionCount(
            minute=int(start) + BUCKET_S, decision=Decision.DENY, fail_open=False, count=1
        ),
        DecisionCount(minute=int(start) - 60, decision=Decision.DENY, fail_open=False, count=9),
    ]
    chart = decision_chart(counts, now)
    assert chart.totals[Decision.ALLOW] == 5
    assert chart.totals[Decision.DENY] == 1  # the minute before the hour is not shown
    assert chart.fail_open == 2
    assert chart.peak == 5
    assert [bar.colour for bar in chart.bars] == ["#2e7d32", "#c62828"]
    assert chart.bars[0].height == chart.height


async def _feed_events(tmp_path: Path) -> tuple[list[str], list[str]]:
    store = SqliteStore(tmp_path / "feed.db")
    feed = LiveFeed(store, poll_s=0.02)
    admin = Principal(name="admin", role=Role.ADMIN, tenants=frozenset({"*"}), key_id="k1")
    acme = Principal(name="acme", role=Role.VIEWER, tenants=frozenset({"acme"}), key_id="k2")

    async def collect(principal: Principal, into: list[str]) -> None:
        async for message in feed.stream(principal):
            if message.startswith("event: change") and '"kind":"tick"' not in message:
                into.append(message)

    seen_by_admin: list[str] = []
    seen_by_acme: list[str] = []
    tasks = [
        asyncio.create_task(collect(admin, seen_by_admin)),
        asyncio.create_task(collect(acme, seen_by_acme)),
    ]
    await asyncio.sleep(0.2)  # the feed has read the heads: only new events count
    drafts = [
        AuditDraft(tenant_id="acme", kind="job.transition", subject="j1", data={"to": "PENDING"}),
        AuditDraft(tenant_id="globex", kind="decision", subject="j2", data={"decision": "DENY"}),
    ]
    await store.append_audit(drafts)
    for _ in range(100):
        if len(seen_by_admin) >= 2:
            break
        await asyncio.sleep(0.02)
    await feed.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await store.close()
    return seen_by_admin, seen_by_acme


def test_the_live_feed_tails_every_chain_and_filters_by_tenant(tmp_path: Path) -> None:
    # A thread of its own: Playwright's sync API keeps an event loop on the main thread.
    with ThreadPoolExecutor(1) as thread:
        seen_by_admin, seen_by_acme = thread.submit(asyncio.run, _feed_events(tmp_path)).result()
    assert len(seen_by_admin) == 2
    assert '"tenant":"globex"' in seen_by_admin[1]
    assert len(seen_by_acme) == 1
    assert '"subject":"j1"' in seen_by_acme[0]
    assert '"to":"PENDING"' in seen_by_acme[0]
