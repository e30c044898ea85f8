"""Bad input never gets past the API: a 4xx in the one error shape, and nothing stored.

Pinned, for ``POST /api/v1/jobs`` and ``POST /api/v1/policy/simulate`` (job bodies) and for
``POST /api/v1/workers``, ``/workers/{id}/poll`` and ``/workers/{id}/jobs/{job}/result``:

- malformed JSON (truncated, trailing garbage, NaN/Infinity, which are not JSON) is
  ``400 invalid_json`` with the line and column; a body that is not an object (array,
  string, number, boolean, null) is ``400 invalid_json``; bytes that are not UTF-8 are
  ``400 invalid_encoding``; an empty body is ``400 empty_body``; a non-JSON Content-Type is
  ``415``; a body over ``max_body_bytes`` is ``413`` whether or not it declares its length;
- a field of the wrong type, a missing/empty/too long topic, or an unknown field is
  ``422 invalid_request`` whose message and ``details`` name the field; too many labels
  is ``422 too_many_labels``; over-long label keys/values are ``422 label_too_long``;
- header/body disagreements are ``400 idempotency_key_mismatch`` / ``400 tenant_mismatch``;
- input the store cannot keep (lone UTF-16 surrogates, nesting hundreds deep, integers
  too large to handle) is refused with a 4xx, never a 500;
- every answer is ``{error, code, status}`` with ``status`` equal to the HTTP status and a
  message that names what is wrong; the store holds no new job or worker afterwards.

A light Hypothesis fuzz posts arbitrary JSON values (and job-shaped objects) and pins that
no body makes the server answer 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cordum.models import Job
from tests.api.support import API_POLICY, POOLS, assert_error, served, stored_job_count
from tests.pipeline.harness import AUTH, Harness, running_plane
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

LIMIT = 256 * 1024
"""max_body_bytes of the plane under test: room for 100k nested lists, small enough to pass."""
MAX_LABELS = 5

JOBS = "/api/v1/jobs"
SIMULATE = "/api/v1/policy/simulate"
REGISTER = "/api/v1/workers"
POLL = "/api/v1/workers/{worker}/poll"
RESULT = "/api/v1/workers/{worker}/jobs/nojob/result"


def body(**fields: Any) -> bytes:
    """A JSON body (ASCII, so escapes such as a lone surrogate pass through unchanged)."""
    return json.dumps(fields).encode()


def job(**fields: Any) -> bytes:
    """A job body with a valid topic unless ``fields`` overrides it."""
    return body(**{"topic": "job.test.x", **fields})


def nested(depth: int) -> bytes:
    """A job whose context is ``depth`` lists inside each other."""
    return b'{"topic": "job.test.x", "context": ' + b"[" * depth + b"]" * depth + b"}"


@dataclass(frozen=True)
class Case:
    """One bad request and what the API must answer."""

    name: str
    content: bytes
    status: int | tuple[int, ...]
    code: str | None = None
    says: tuple[str, ...] = ()
    """Every one of these appears in the message (case-insensitive)."""
    says_any: tuple[str, ...] = ()
    """At least one of these appears in the message (case-insensitive)."""
    detail: str | None = None
    """For 422 invalid_request: ``details`` has an entry for this field (or an item of it)."""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    submit_only: bool = False
    """Only POST /jobs (the policy endpoints store nothing and may answer such input)."""


def invalid(name: str, content: bytes, field_name: str, *says: str) -> Case:
    """A 422 invalid_request naming ``field_name``."""
    return Case(
        name,
        content,
        422,
        "invalid_request",
        says=(field_name, *says),
        detail=field_name,
    )


SURROGATE = ("surrogate", "unicode", "utf")

JOB_CASES = [
    # --- malformed JSON -------------------------------------------------------------------
    Case("truncated", b'{"topic": "job.test.x"', 400, "invalid_json", ("line 1", "column")),
    Case(
        "trailing-garbage",
        b'{"topic": "job.test.x"} trailing',
        400,
        "invalid_json",
        ("line 1", "column", "extra data"),
    ),
    Case("single-quotes", b"{'topic': 'job.test.x'}", 400, "invalid_json", ("line 1", "column")),
    Case("trailing-comma", b'{\n  "topic": "job.test.x",\n}', 400, "invalid_json", ("line 3",)),
    Case(
        "nan",
        b'{"topic": "job.test.x", "context": NaN}',
        400,
        "invalid_json",
        says_any=("nan", "line 1"),
    ),
    Case(
        "infinity",
        b'{"topic": "job.test.x", "context": [-Infinity]}',
        400,
        "invalid_json",
        says_any=("infinity", "line 1"),
    ),
    # --- not an object --------------------------------------------------------------------
    Case("array", b'[{"topic": "job.test.x"}]', 400, "invalid_json", ("object", "list")),
    Case("string", b'"job.test.x"', 400, "invalid_json", ("object", "str")),
    Case("number", b"42", 400, "invalid_json", ("object", "int")),
    Case("boolean", b"true", 400, "invalid_json", ("object", "bool")),
    Case("null", b"null", 400, "invalid_json", ("object",)),
    # --- encoding, media type, emptiness --------------------------------------------------
    Case("non-utf8", b'{"topic": "\xff"}', 400, "invalid_encoding", ("utf-8",)),
    Case("latin-1", '{"topic": "job.test.café"}'.encode("latin-1"), 400, "invalid_encoding"),
    Case(
        "text-plain",
        job(),
        415,
        "unsupported_media_type",
        ("json",),
        headers={"content-type": "text/plain"},
    ),
    Case(
        "form-encoded",
        b"topic=job.test.x",
        415,
        "unsupported_media_type",
        ("json",),
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case("empty", b"", 400, "empty_body", ("empty",)),
    Case("whitespace-only", b" \r\n\t ", 400, "empty_body", ("empty",)),
    # --- size -----------------------------------------------------------------------------
    Case(
        "oversize-content-length",
        job(context="a" * (LIMIT + 10)),
        413,
        "payload_too_large",
        (str(LIMIT),),
    ),
    Case(
        "oversize-chunked",
        job(context="a" * (LIMIT + 10)),
        413,
        "payload_too_large",
        (str(LIMIT),),
        chunked=True,
    ),
    # --- topic ----------------------------------------------------------------------------
    invalid("missing-topic", body(context={"a": 1}), "topic", "required"),
    invalid("empty-object", b"{}", "topic", "required"),
    invalid("empty-topic", job(topic=""), "topic"),
    invalid("topic-too-long", job(topic="job.test." + "x" * 247), "topic", "255"),
    invalid("topic-int", job(topic=42), "topic"),
    invalid("topic-null", job(topic=None), "topic"),
    invalid("topic-list", job(topic=["job.test.x"]), "topic"),
    invalid("topic-object", job(topic={"name": "job.test.x"}), "topic"),
    # --- every other field kind -----------------------------------------------------------
    invalid("tenant-int", job(tenant_id=7), "tenant_id"),
    invalid("capability-list", job(capability=["x"]), "capability"),
    invalid("prompt-object", job(prompt={"text": "hi"}), "prompt"),
    invalid("actor-id-int", job(actor_id=1), "actor_id"),
    invalid("actor-type-bool", job(actor_type=True), "actor_type"),
    invalid("pack-id-list", job(pack_id=[]), "pack_id"),
    invalid("principal-id-float", job(principal_id=1.5), "principal_id"),
    invalid("idempotency-key-int", job(idempotency_key=5), "idempotency_key"),
    invalid("risk-tags-string", job(risk_tags="prod"), "risk_tags"),
    invalid("risk-tags-ints", job(risk_tags=[1, 2]), "risk_tags"),
    invalid("risk-tags-object", job(risk_tags={"prod": True}), "risk_tags"),
    invalid("requires-string", job(requires="db"), "requires"),
    invalid("requires-null-item", job(requires=[None]), "requires"),
    invalid("labels-list", job(labels=["env=prod"]), "labels"),
    invalid("labels-string", job(labels="env=prod"), "labels"),
    invalid("labels-null", job(labels=None), "labels"),
    invalid("label-value-object", job(labels={"env": {"name": "prod"}}), "labels.env"),
    invalid("label-value-list", job(labels={"env": ["prod"]}), "labels.env"),
    invalid("label-value-null", job(labels={"env": None}), "labels.env"),
    invalid("priority-unknown", job(priority="urgent"), "priority"),
    invalid("priority-int", job(priority=1), "priority"),
    invalid("deadline-zero", job(deadline_ms=0), "deadline_ms"),
    invalid("deadline-negative", job(deadline_ms=-1), "deadline_ms"),
    invalid("deadline-string", job(deadline_ms="5"), "deadline_ms"),
    invalid("deadline-bool", job(deadline_ms=True), "deadline_ms"),
    invalid("deadline-fraction", job(deadline_ms=1.5), "deadline_ms"),
    invalid("deadline-word", job(deadline_ms="soon"), "deadline_ms"),
    # --- unknown and contradictory fields -------------------------------------------------
    invalid("unknown-field", job(risk_tag=["prod"]), "risk_tag", "unknown field"),
    invalid("unknown-capitalised", job(Topic="job.test.x"), "Topic", "unknown field"),
    Case(
        "two-unknown-fields",
        job(colour="red", size=3),
        422,
        "invalid_request",
        ("colour", "size", "unknown field"),
        detail="colour",
    ),
    Case(
        "tenant-and-tenant-id",
        job(tenant="a", tenant_id="a"),
        422,
        "invalid_request",
        ("tenant_id", "tenant"),
    ),
    # --- labels ---------------------------------------------------------------------------
    Case(
        "too-many-labels",
        job(labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)}),
        422,
        "too_many_labels",
        (str(MAX_LABELS + 1), str(MAX_LABELS)),
    ),
    Case("long-label-key", job(labels={"k" * 257: "v"}), 422, "label_too_long", ("256",)),
    Case("long-label-value", job(labels={"env": "v" * 4097}), 422, "label_too_long", ("4096",)),
    Case(
        "label-keys-differ-in-case",
        job(labels={"Env": "prod", "env": "dev"}),
        422,
        "invalid_request",
        ("same key",),
        detail="labels",
    ),
    # --- headers that contradict the body -------------------------------------------------
    Case(
        "idempotency-key-mismatch",
        job(idempotency_key="body-key"),
        400,
        "idempotency_key_mismatch",
        ("idempotency",),
        headers={"idempotency-key": "header-key"},
    ),
    Case(
        "tenant-mismatch",
        job(tenant_id="other"),
        400,
        "tenant_mismatch",
        ("acme", "other"),
        headers={"x-tenant-id": "acme"},
    ),
    Case(
        "tenant-spelling-mismatch",
        job(tenant="other"),
        400,
        "tenant_mismatch",
        ("acme", "other"),
        headers={"x-tenant-id": "acme"},
    ),
    # --- nesting and numbers the server cannot keep ---------------------------------------
    Case("nested-100k", nested(100_000), 400, "invalid_json", ("nested",)),
    Case(
        "big-integer",
        b'{"topic": "job.test.x", "context": ' + b"9" * 5000 + b"}",
        (400, 413, 422),
        says_any=("digit", "integer", "number", "large"),
    ),
    Case(
        "nested-600",
        nested(600),
        (400, 413, 422),
        says_any=("nested", "deep", "depth"),
        submit_only=True,
    ),
    Case(
        "deadline-beyond-float",
        b'{"topic": "job.test.x", "deadline_ms": 1' + b"0" * 400 + b"}",
        422,
        says=("deadline_ms",),
        submit_only=True,
    ),
    # --- lone UTF-16 surrogates (valid JSON escapes, not encodable text) ------------------
    Case("surrogate-topic", job(topic="job.test.\ud800"), (400, 422), says_any=SURROGATE),
    Case(
        "surrogate-context",
        job(context="\ud800"),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-context-key",
        job(context={"\udc00": 1}),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-prompt",
        job(prompt="hi \udfff"),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-label-value",
        job(labels={"env": "\ud800"}),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-label-key",
        job(labels={"\ud800": "x"}),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-tenant",
        job(tenant_id="\ud800"),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
    Case(
        "surrogate-idempotency-key",
        job(idempotency_key="\ud800"),
        (400, 422),
        says_any=SURROGATE,
        submit_only=True,
    ),
]

WORKER_CASES = [
    (REGISTER, Case("array", b"[]", 400, "invalid_json", ("object",))),
    (REGISTER, Case("truncated", b'{"pool": "p"', 400, "invalid_json", ("line 1",))),
    (REGISTER, Case("empty", b"", 400, "empty_body")),
    (
        REGISTER,
        Case(
            "text-plain",
            body(pool="p", topics=["job.test.>"]),
            415,
            "unsupported_media_type",
            headers={"content-type": "text/plain"},
        ),
    ),
    (
        REGISTER,
        Case(
            "oversize-chunked",
            body(pool="p", topics=["job.test.>"], labels={"x": "a" * LIMIT}),
            413,
            "payload_too_large",
            chunked=True,
        ),
    ),
    (
        REGISTER,
        Case(
            "bad-worker-id",
            body(worker_id="a b", pool="p", topics=["job.x"]),
            422,
            "invalid_worker",
            ("a b",),
        ),
    ),
    (
        REGISTER,
        Case(
            "bad-topic-pattern",
            body(pool="p", topics=["job..x"]),
            422,
            "invalid_worker",
            ("job..x",),
        ),
    ),
    (
        REGISTER,
        Case(
            "inner-wildcard",
            body(pool="p", topics=["job.>.x"]),
            422,
            "invalid_worker",
            ("job.>.x",),
        ),
    ),
    (REGISTER, invalid("topics-string", body(pool="p", topics="job.x"), "topics")),
    (REGISTER, invalid("topics-empty", body(pool="p", topics=[]), "topics")),
    (REGISTER, invalid("pool-missing", body(topics=["job.x"]), "pool", "required")),
    (REGISTER, invalid("pool-empty", body(pool="", topics=["job.x"]), "pool")),
    (REGISTER, invalid("capacity-zero", body(pool="p", topics=["job.x"], capacity=0), "capacity")),
    (
        REGISTER,
        invalid("capacity-word", body(pool="p", topics=["job.x"], capacity="many"), "capacity"),
    ),
    (
        REGISTER,
        invalid(
            "transport-unknown", body(pool="p", topics=["job.x"], transport="smtp"), "transport"
        ),
    ),
    (
        REGISTER,
        invalid("labels-nested", body(pool="p", topics=["job.x"], labels={"a": {}}), "labels.a"),
    ),
    (
        REGISTER,
        invalid(
            "unknown-field",
            body(pool="p", topics=["job.x"], topic="job.x"),
            "topic",
            "unknown field",
        ),
    ),
    (POLL, Case("array", b"[1]", 400, "invalid_json", ("object",))),
    (POLL, Case("malformed", b"{", 400, "invalid_json", ("line 1",))),
    (POLL, invalid("wait-too-long", body(wait_s=31), "wait_s", "30")),
    (POLL, invalid("wait-negative", body(wait_s=-1), "wait_s")),
    (POLL, invalid("max-jobs-zero", body(max_jobs=0), "max_jobs")),
    (POLL, invalid("max-jobs-word", body(max_jobs="all"), "max_jobs")),
    (POLL, invalid("unknown-field", body(wait=1), "wait", "unknown field")),
    (RESULT, Case("array", b"[]", 400, "invalid_json", ("object",))),
    (RESULT, Case("empty", b"", 400, "empty_body")),
    (RESULT, invalid("status-missing", body(result=1), "status", "required")),
    (RESULT, invalid("status-unknown", body(status="done"), "status")),
    (RESULT, invalid("error-string", body(status="failed", error="boom"), "error")),
    (
        RESULT,
        invalid("error-incomplete", body(status="failed", error={"code": "x"}), "error.message"),
    ),
    (RESULT, invalid("retryable-word", body(status="failed", retryable="maybe"), "retryable")),
    (
        RESULT,
        invalid("unknown-field", body(status="succeeded", output=1), "output", "unknown field"),
    ),
]

ENDPOINT_CASES = [
    pytest.param(path, case, id=f"{label}-{case.name}")
    for case in JOB_CASES
    for path, label in ((JOBS, "jobs"), (SIMULATE, "simulate"))
    if path == JOBS or not case.submit_only
] + [
    pytest.param(path, case, id=f"{path.rsplit('/', 1)[-1]}-{case.name}")
    for path, case in WORKER_CASES
]


@dataclass
class Table:
    """The plane shared by the table's cases, and the worker whose endpoints they call."""

    harness: Harness
    worker_id: str


@pytest.fixture(scope="module")
async def table(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Table]:
    """One served plane for the whole table (every case checks the store is unchanged)."""
    async with served(
        tmp_path_factory.mktemp("bad-input"), max_body_bytes=LIMIT, max_labels=MAX_LABELS
    ) as harness:
        worker = await BareWorker.register(harness.http)
        yield Table(harness, worker.worker_id)


async def chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """The body as an async stream: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def send(http: httpx.AsyncClient, path: str, case: Case) -> httpx.Response:
    """POST the case's body as it describes."""
    headers = {"content-type": "application/json", **case.headers}
    if case.chunked:
        response = await http.post(path, content=chunks(case.content), headers=headers)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        return response
    return await http.post(path, content=case.content, headers=headers)


@pytest.mark.parametrize(("path", "case"), ENDPOINT_CASES)
async def test_bad_request_is_a_specific_4xx_and_stores_nothing(
    table: Table, path: str, case: Case
) -> None:
    harness = table.harness
    jobs_before = await stored_job_count(harness)
    workers_before = len(await harness.plane.store.list_workers())

    response = await send(harness.http, path.format(worker=table.worker_id), case)

    statuses = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in statuses, (
        f"expected {statuses}, got {response.status_code}: {response.text[:300]}"
    )
    error = assert_error(response, response.status_code, case.code)
    message = error["error"].lower()
    for expected in case.says:
        assert expected.lower() in message, f"{expected!r} not in {error['error']!r}"
    if case.says_any:
        assert any(s.lower() in message for s in case.says_any), (
            f"none of {case.says_any} in {error['error']!r}"
        )
    if case.detail is not None:
        fields = [d["field"] for d in error.get("details", [])]
        assert any(f == case.detail or f.startswith(f"{case.detail}.") for f in fields), error
        assert all(d["message"] for d in error["details"]), error
    assert await stored_job_count(harness) == jobs_before, "a refused request stored a job"
    assert len(await harness.plane.store.list_workers()) == workers_before


async def test_an_escaped_surrogate_pair_is_ordinary_text(table: Table) -> None:
    """The control for the lone-surrogate cases: a valid pair is one character, kept intact."""
    harness = table.harness
    response = await harness.http.post(
        JOBS,
        content=job(topic="job.test.emoji", context="\U0001f600", labels={"mood": "\U0001f600"}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    view = (await harness.http.get(f"{JOBS}/{response.json()['job_id']}")).json()
    assert view["input"] == "\U0001f600"
    assert view["labels"] == {"mood": "\U0001f600"}


async def test_label_numbers_and_booleans_are_kept_as_their_json_text(table: Table) -> None:
    response = await table.harness.submit(
        "job.test.labels", labels={"replicas": 3, "ratio": 0.5, "dry_run": True}
    )
    assert response.status_code == 200, response.text
    stored = await table.harness.job(response.json()["job_id"])
    assert stored.labels == {"replicas": "3", "ratio": "0.5", "dry_run": "true"}


# --- fuzz -------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
JOB_FIELDS = sorted({*Job.model_fields, "tenant"})
JOB_SHAPED = st.dictionaries(
    st.sampled_from(JOB_FIELDS) | st.text(max_size=8), JSON_VALUES, max_size=6
) | st.builds(
    lambda topic, rest: {"topic": topic, **rest},
    st.sampled_from(["job.test.run", "job.test.delete", "job.test.bulk", "job.other"])
    | st.text(max_size=12),
    st.dictionaries(st.sampled_from(JOB_FIELDS), JSON_VALUES, max_size=4),
)


@contextlib.contextmanager
def served_in_thread(data_dir: Path, **overrides: Any) -> Iterator[Harness]:
    """A plane served from its own event loop in a thread, for synchronous (Hypothesis) tests."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        try:
            async with running_plane(data_dir, policy_text=API_POLICY, **overrides) as plane:
                box["harness"] = plane
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc

    thread = threading.Thread(target=run, name="served-plane", daemon=True)
    thread.start()
    assert ready.wait(15), "the plane did not start"
    if "harness" not in box:
        raise AssertionError(f"the plane failed to start: {box.get('error')!r}")
    try:
        yield box["harness"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(15)
        loop.close()
    if "error" in box:
        raise box["error"]


def test_fuzzed_json_bodies_never_get_a_5xx(tmp_path: Path) -> None:
    with (
        served_in_thread(tmp_path, pools=POOLS) as plane,
        httpx.Client(
            base_url=plane.url,
            timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers=AUTH,
        ) as http,
    ):

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(value=st.one_of(JSON_VALUES, JOB_SHAPED))
        def post_any(value: Any) -> None:
            response = http.post(
                JOBS,
                content=json.dumps(value).encode(),
                headers={"content-type": "application/json"},
            )
            assert response.status_code < 500, f"{value!r} -> {response.text[:300]}"
            if response.status_code >= 400:
                assert_error(response, response.status_code)

        post_any()
