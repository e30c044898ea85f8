"""A Safety Kernel in another process, asked over gRPC (``cordum.agent.v1.SafetyKernel``).

:class:`RemoteKernel` implements the services' Kernel protocol, so the safety client
wraps it exactly as it wraps the local kernel (timeout, fail mode, circuit breaker).
Against a Cordum kernel server (:mod:`cordum.api.kernel_grpc`) every answer is exactly
the one the local kernel would give: the job travels whole as JSON and the answer comes
back whole in trailing metadata (see :mod:`cordum.models.cap_safety`). Against another
CAP kernel, decisions are read from the CAP fields alone; explanations and output
checks need a Cordum kernel.

Failures surface as exceptions for the safety client to judge: a malformed job is
:class:`~cordum.policy.InvalidJobError` (the caller's mistake, a 4xx), a missed deadline
is :class:`TimeoutError`, anything else (down, refused token, internal error)
:class:`RemoteKernelError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from pydantic import BaseModel, ValidationError

from cordum.models import DecisionRecord, Explanation, Job, OutputDecision, OutputVerdict
from cordum.models import cap_safety as wire
from cordum.models.cap_safety import CheckRequest, CheckResponse, safety_pb2
from cordum.policy import InvalidJobError

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""Largest answer accepted, trailing metadata included (a long explanation, a redacted
output): gRPC's default metadata limit (16 KiB) is far too small for either."""

MAX_RECONNECT_BACKOFF_MS = 5000

_Model = TypeVar("_Model", bound=BaseModel)


class RemoteKernelError(RuntimeError):
    """The remote kernel could not answer (unreachable, refused the call, failed)."""


class RemoteKernel:
    """The Kernel protocol over a gRPC channel to ``target`` (``host:port``)."""

    remote = True

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        """``token`` is sent as ``authorization: Bearer <token>``; ``timeout`` is every
        call's deadline; ``credentials`` (``grpc.ssl_channel_credentials``) select TLS.

        The channel opens on first use; :meth:`connect` opens it and learns the active
        snapshot at once.
        """
        self.target = target
        self.timeout = timeout
        self.credentials = credentials
        self.max_answer_bytes = max_answer_bytes
        self._auth: tuple[tuple[str, str], ...] = (
            ((wire.AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._snapshot = ""

    async def connect(self) -> None:
        """Open the channel and read the active snapshot (raises when the kernel is down)."""
        await self.snapshots()

    async def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def evaluate(self, job: Job) -> DecisionRecord:
        """See :meth:`Kernel.evaluate` (RPC ``Check``)."""
        return await self._decision("Check", wire.request_for_job(job))

    async def recheck(self, job: Job) -> DecisionRecord:
        """See :meth:`Kernel.recheck` (RPC ``Evaluate``, ``cordum-mode: recheck``)."""
        return await self._decision("Evaluate", wire.request_for_job(job), wire.MODE_RECHECK)

    async def simulate(self, job: Job | dict[str, Any]) -> DecisionRecord:
        """See :meth:`Kernel.simulate` (RPC ``Simulate``)."""
        return await self._decision("Simulate", _request(job))

    async def explain(self, job: Job | dict[str, Any]) -> Explanation:
        """See :meth:`Kernel.explain` (RPC ``Explain``)."""
        _, answer = await self._call("Explain", _request(job))
        return self._full(Explanation, answer, "an explanation")

    async def evaluate_output(self, job: Job, output: Any, *, failed: bool) -> OutputVerdict:
        """See :meth:`Kernel.evaluate_output` (RPC ``Evaluate``, ``cordum-mode: output``)."""
        request = wire.request_for_output(job, output, failed=failed)
        _, answer = await self._call("Evaluate", request, wire.MODE_OUTPUT)
        verdict = self._full(OutputVerdict, answer, "an output verdict")
        if verdict.decision is OutputDecision.ALLOW:  # the server leaves the echo out
            return verdict.model_copy(update={"output": output})
        return verdict

    def snapshot_id(self) -> str:
        """The snapshot of the last answer (or of :meth:`connect`); empty before either.

        Synchronous, so it cannot ask: a policy published on the kernel since the last
        answer is not seen until the next one.
        """
        return self._snapshot

    async def snapshots(self) -> list[str]:
        """The kernel's active snapshot id first, then its published history."""
        method = self._method("ListSnapshots", safety_pb2.ListSnapshotsResponse)
        try:
            response = await method(
                safety_pb2.ListSnapshotsRequest(), timeout=self.timeout, metadata=self._auth
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        ids = list(response.snapshots)
        if ids:
            self._snapshot = ids[0]
        return ids

    async def _decision(
        self, method: str, request: CheckRequest, mode: str | None = None
    ) -> DecisionRecord:
        response, answer = await self._call(method, request, mode)
        if answer is not None:
            return self._parse(DecisionRecord, answer)
        try:
            return wire.record_from_response(response)
        except ValueError as exc:
            raise RemoteKernelError(f"the kernel at {self.target} answered badly: {exc}") from None

    async def _call(
        self, method: str, request: CheckRequest, mode: str | None = None
    ) -> tuple[CheckResponse, bytes | None]:
        metadata = (*self._auth, (wire.MODE_KEY, mode)) if mode else self._auth
        ask = self._method(method, safety_pb2.PolicyCheckResponse)
        call = ask(request, timeout=self.timeout, metadata=metadata)
        try:
            response = await call
            trailers = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        if response.policy_snapshot:
            self._snapshot = response.policy_snapshot
        return response, _entry(trailers, wire.RECORD_KEY)

    def _method(self, name: str, answer: Any) -> Any:
        """A callable for RPC ``name`` whose answers are ``answer`` messages."""
        if self._channel is None:
            options = (
                # A kernel back from an outage is used again within seconds, not after
                # gRPC's default reconnect backoff (up to two minutes).
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
                ("grpc.max_receive_message_length", self.max_answer_bytes),
                ("grpc.max_metadata_size", self.max_answer_bytes),
                ("grpc.absolute_max_metadata_size", self.max_answer_bytes),
            )
            if self.credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self.credentials, options=options
                )
        return self._channel.unary_unary(
            f"/{wire.SERVICE}/{name}",
            request_serializer=_serialize,
            response_deserializer=answer.FromString,
        )

    def _full(self, model: type[_Model], answer: bytes | None, what: str) -> _Model:
        if answer is None:
            raise RemoteKernelError(
                f"the kernel at {self.target} sent no {what}: only a Cordum kernel does"
            )
        return self._parse(model, answer)

    def _parse(self, model: type[_Model], answer: bytes) -> _Model:
        try:
            return model.model_validate_json(answer)
        except ValidationError as exc:
            raise RemoteKernelError(
                f"the kernel at {self.target} sent an answer this client cannot read: {exc}"
            ) from None

    def _error(self, exc: grpc.aio.AioRpcError) -> Exception:
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            field = _entry(exc.trailing_metadata(), wire.INVALID_FIELD_KEY)
            if field is not None:
                name = field.decode()
                return InvalidJobError(name, details.removeprefix(f"job field `{name}`: "))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TimeoutError(f"the kernel at {self.target} did not answer in {self.timeout} s")
        return RemoteKernelError(f"the kernel at {self.target} answered {code.name}: {details}")


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _request(job: Job | Mapping[str, Any]) -> CheckRequest:
    return wire.request_for_job(job) if isinstance(job, Job) else wire.request_for_fields(job)


def _entry(metadata: Iterable[tuple[str, Any]] | None, key: str) -> bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, bytes) else str(value).encode()
    return None
