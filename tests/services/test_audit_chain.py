"""The audit chain core: canonical JSON, sealing, signed checkpoints, verification.

Pinned: the canonical form is byte for byte RFC 8785 (checked against the ``rfc8785``
package); an untouched chain verifies; each kind of tampering (modify, modify and
re-seal, delete, reorder, truncate) is reported with the right kind and position; an
HMAC key stops re-sealing; checkpoints are genuine only with the right key.
"""

from __future__ import annotations

import os
import string

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from cordum.models.audit import GENESIS_HASH, AuditEvent, TamperKind
from cordum.services.audit import (
    ChainHasher,
    CheckpointSigner,
    canonical,
    checkpoint_is_genuine,
    verify_chain,
)

TENANT = "acme"

json_scalars = st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_is_exactly_rfc8785(value):
    assert canonical(value).encode() == rfc8785.dumps(value)


def test_canonical_sorts_keys_by_utf16_code_units():
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FF61 (by code point it is after)
    value = {"\uff61": 1, "\U0001f600": 2, "a": 3}
    assert canonical(value) == '{"a":3,"\U0001f600":2,"\uff61":1}'
    assert canonical(value).encode() == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "bad", [{"x": 1.5}, {"x": float("nan")}, {"x": {1, 2}}, {"x": {1: 2}}, {"x": 2**53}]
)
def test_canonical_refuses_what_has_no_exact_form(bad):
    with pytest.raises(TypeError):
        canonical(bad)


def build_chain(hasher: ChainHasher, count: int, tenant: str = TENANT) -> list[AuditEvent]:
    """``count`` sealed events of one tenant."""
    events: list[AuditEvent] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        event = hasher.seal(
            tenant_id=tenant,
            seq=seq,
            prev_hash=prev,
            kind="job.transition",
            at_ms=1_763_750_000_000 + seq,
            actor="scheduler",
            subject=f"job-{seq % 7}",
            data={"from": "PENDING", "to": "DISPATCHED", "reason": f"step {seq}"},
        )
        events.append(event)
        prev = event.event_hash
    return events


def tampered(event: AuditEvent, **changes: object) -> AuditEvent:
    """``event`` with stored fields changed and nothing re-sealed (a direct store edit)."""
    return event.model_copy(update=changes)


def resealed(hasher: ChainHasher, event: AuditEvent, **data: object) -> AuditEvent:
    """``event`` with new data, re-sealed in place (what an attacker without the key does)."""
    return hasher.seal(
        tenant_id=event.tenant_id,
        seq=event.seq,
        prev_hash=event.prev_hash,
        kind=event.kind,
        at_ms=event.at_ms,
        actor=event.actor,
        subject=event.subject,
        data={**event.data, **data},
    )


def test_an_untouched_chain_verifies():
    hasher = ChainHasher()
    report = verify_chain(TENANT, build_chain(hasher, 50), hasher)
    assert report.ok
    assert (report.checked, report.last_seq, report.kind, report.first_bad_seq) == (
        50,
        50,
        None,
        None,
    )


def test_an_empty_chain_verifies():
    report = verify_chain(TENANT, [], ChainHasher())
    assert report.ok
    assert report.last_seq == 0


@pytest.mark.parametrize("position", [1, 17, 30])
@pytest.mark.parametrize(
    "change",
    [
        {"data": {"from": "PENDING", "to": "SUCCEEDED", "reason": "forged"}},
        {"actor": "someone-else"},
        {"kind": "decision"},
        {"at_ms": 1},
    ],
)
def test_a_modified_field_is_found_at_its_event(position, change):
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    events[position - 1] = tampered(events[position - 1], **change)
    report = verify_chain(TENANT, events, hasher)
    assert not report.ok
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, position)
    assert report.last_seq == position - 1


def test_a_modified_body_is_found_at_its_event():
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    events[9] = tampered(events[9], body=events[9].body.replace("step 10", "step 99"))
    report = verify_chain(TENANT, events, hasher)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 10)


def test_a_modified_and_resealed_event_is_found_by_its_successor():
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    events[11] = resealed(hasher, events[11], reason="forged")
    report = verify_chain(TENANT, events, hasher)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 12)


def test_with_an_hmac_key_a_resealed_event_fails_on_its_own():
    hasher = ChainHasher(key=os.urandom(32))
    events = build_chain(hasher, 30)
    events[11] = resealed(ChainHasher(), events[11], reason="forged")  # no key to seal with
    report = verify_chain(TENANT, events, hasher)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 12)
    assert not verify_chain(TENANT, build_chain(hasher, 5), ChainHasher(key=b"wrong")).ok


@pytest.mark.parametrize("position", [1, 15, 29])
def test_a_deleted_event_is_missing_at_its_position(position):
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    del events[position - 1]
    report = verify_chain(TENANT, events, hasher)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MISSING, position)


def test_events_renumbered_into_another_order_are_reordered():
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    fifth, sixth = events[4], events[5]
    # swap their sequence numbers in the store: listed by seq, the sixth now comes first
    events[4], events[5] = tampered(sixth, seq=5), tampered(fifth, seq=6)
    report = verify_chain(TENANT, events, hasher)
    assert (report.kind, report.first_bad_seq) == (TamperKind.REORDERED, 5)


def test_events_listed_out_of_order_are_reordered():
    hasher = ChainHasher()
    events = build_chain(hasher, 30)
    events[20], events[21] = events[21], events[20]
    report = verify_chain(TENANT, events, hasher)
    assert report.kind is TamperKind.REORDERED
    assert report.first_bad_seq == 21


def signed(signer: CheckpointSigner, event: AuditEvent):
    return signer.sign(event.tenant_id, event.seq, event.event_hash, event.at_ms)


def test_truncating_the_newest_events_is_found_by_a_checkpoint():
    hasher, signer = ChainHasher(), CheckpointSigner(os.urandom(32))
    events = build_chain(hasher, 40)
    checkpoints = [signed(signer, events[19]), signed(signer, events[39])]
    keys = {signer.key_id: signer.public_key}
    intact = verify_chain(TENANT, events, hasher, checkpoints=checkpoints, public_keys=keys)
    assert intact.ok
    assert intact.checkpoints == 2
    cut = verify_chain(TENANT, events[:33], hasher, checkpoints=checkpoints, public_keys=keys)
    assert (cut.kind, cut.first_bad_seq, cut.last_seq) == (TamperKind.TRUNCATED, 34, 33)


def test_a_chain_rewritten_under_a_checkpoint_disagrees_with_it():
    hasher, signer = ChainHasher(), CheckpointSigner(os.urandom(32))
    events = build_chain(hasher, 20)
    checkpoint = signed(signer, events[9])
    rewritten = build_chain(hasher, 20)[:9]
    prev = rewritten[-1].event_hash
    for event in events[9:]:  # a different tenth event, the rest re-sealed after it
        forged = hasher.seal(
            tenant_id=TENANT,
            seq=event.seq,
            prev_hash=prev,
            kind=event.kind,
            at_ms=event.at_ms,
            data={"forged": True},
        )
        rewritten.append(forged)
        prev = forged.event_hash
    keys = {signer.key_id: signer.public_key}
    report = verify_chain(TENANT, rewritten, hasher, checkpoints=[checkpoint], public_keys=keys)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 10)


def test_a_checkpoint_is_genuine_only_with_its_key_and_content():
    signer, other = CheckpointSigner(os.urandom(32)), CheckpointSigner(os.urandom(32))
    checkpoint = signer.sign(TENANT, 7, "ab" * 32, 123)
    assert checkpoint_is_genuine(checkpoint, {signer.key_id: signer.public_key})
    assert not checkpoint_is_genuine(checkpoint, {other.key_id: other.public_key})
    assert not checkpoint_is_genuine(checkpoint, {signer.key_id: other.public_key})
    for forged in (
        checkpoint.model_copy(update={"seq": 8}),
        checkpoint.model_copy(update={"event_hash": "cd" * 32}),
        checkpoint.model_copy(update={"signature": "00" * 64}),
        checkpoint.model_copy(update={"signature": "not hex"}),
    ):
        assert not checkpoint_is_genuine(forged, {signer.key_id: signer.public_key})


def test_a_forged_checkpoint_makes_verification_fail():
    hasher, signer = ChainHasher(), CheckpointSigner(os.urandom(32))
    events = build_chain(hasher, 10)
    forged = signed(signer, events[4]).model_copy(update={"seq": 6})
    keys = {signer.key_id: signer.public_key}
    report = verify_chain(TENANT, events, hasher, checkpoints=[forged], public_keys=keys)
    assert not report.ok
    assert "signature" in report.detail


def test_key_ids_are_short_stable_hex():
    seed = bytes(range(32))
    assert CheckpointSigner(seed).key_id == CheckpointSigner(seed).key_id
    assert set(CheckpointSigner(seed).key_id) <= set(string.hexdigits)
    assert len(CheckpointSigner(seed).key_id) == 16
