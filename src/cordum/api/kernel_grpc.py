"""The Safety Kernel as a gRPC service: ``cordum.agent.v1.SafetyKernel`` over a Kernel.

This is the kernel's network surface, as the FastAPI app is the gateway's: it maps RPCs
to a :class:`~cordum.services.kernel.Kernel` (normally a
:class:`~cordum.services.kernel.LocalKernel` over the
:class:`~cordum.services.kernel.PolicyHolder` that policy publishes swap) and knows the
status codes. The wire shapes are in :mod:`cordum.models.cap_safety`.

- ``Check`` decides a job at gate A (velocity rules count it). ``Evaluate`` does the same,
  or, with request metadata ``cordum-mode: recheck``, decides it again at gate B
  (velocity rules neither count nor apply), or with ``cordum-mode: output`` checks a
  result against the output rules. ``Simulate`` and ``Explain`` have no side effects.
  ``ListSnapshots`` answers the active snapshot first, then the published history when
  the server was given a way to read it.
- A job the kernel refuses as malformed is ``INVALID_ARGUMENT`` with the kernel's message
  (and the field in trailing metadata ``cordum-invalid-field-bin``), so a Cordum client
  raises :class:`~cordum.policy.InvalidJobError` and its caller answers 4xx; a request
  this server cannot read is ``INVALID_ARGUMENT`` too. Anything else is ``INTERNAL``
  with a generic message: the details go to this process's log, not to the caller.
- With a token, every RPC must carry ``authorization: Bearer <token>`` (compared in
  constant time) or is ``UNAUTHENTICATED``. The token travels in clear text unless the
  server is given TLS credentials.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from pydantic import ValidationError

from cordum.models import DecisionRecord, Explanation, Job, OutputVerdict
from cordum.models import cap_safety as wire
from cordum.models.cap_safety import CheckRequest, CheckResponse, safety_pb2
from cordum.policy import InvalidJobError
from cordum.services.kernel import Kernel

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest request accepted (an output to check travels in one)."""

SnapshotHistory = Callable[[], Awaitable[Sequence[str]]]
"""Published snapshot ids, newest first (e.g. from the store's snapshot list)."""

_Answer = DecisionRecord | Explanation | OutputVerdict
_CORDUM_CONTENT = frozenset(
    (wire.JOB_CONTENT_TYPE, wire.FIELDS_CONTENT_TYPE, wire.OUTPUT_CONTENT_TYPE)
)


class BadRequestError(ValueError):
    """The request is not one this server can answer (a mode or content type out of place)."""


class KernelService:
    """Answers the SafetyKernel RPCs with a :class:`~cordum.services.kernel.Kernel`."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        token: str | None = None,
        snapshots: SnapshotHistory | None = None,
    ) -> None:
        """``token`` (None or empty: no authentication) is what callers must present;
        ``snapshots`` lets ``ListSnapshots`` answer the history after the active one."""
        self.kernel = kernel
        self.snapshots = snapshots
        self._expected = f"Bearer {token}".encode() if token else None

    def handler(self) -> grpc.GenericRpcHandler:
        """The method handlers of ``cordum.agent.v1.SafetyKernel``, for a gRPC server."""
        decide = {
            "Check": self.check,
            "Evaluate": self.evaluate,
            "Explain": self.explain,
            "Simulate": self.simulate,
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=safety_pb2.PolicyCheckRequest.FromString,
                response_serializer=safety_pb2.PolicyCheckResponse.SerializeToString,
            )
            for name, method in decide.items()
        }
        handlers["ListSnapshots"] = grpc.unary_unary_rpc_method_handler(
            self.list_snapshots,
            request_deserializer=safety_pb2.ListSnapshotsRequest.FromString,
            response_serializer=safety_pb2.ListSnapshotsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(wire.SERVICE, handlers)

    async def check(self, request: CheckRequest, context: Any) -> CheckResponse:
        """Gate A: decide the job, counting velocity."""
        return await self._answer("Check", request, context)

    async def evaluate(self, request: CheckRequest, context: Any) -> CheckResponse:
        """Decide the job; ``cordum-mode`` selects a gate B re-check or an output check."""
        return await self._answer("Evaluate", request, context)

    async def simulate(self, request: CheckRequest, context: Any) -> CheckResponse:
        """Decide the job without side effects."""
        return await self._answer("Simulate", request, context)

    async def explain(self, request: CheckRequest, context: Any) -> CheckResponse:
        """The simulated decision; Cordum clients also get the per-rule trace."""
        return await self._answer("Explain", request, context)

    async def list_snapshots(self, request: Any, context: Any) -> Any:
        """The active snapshot id first, then the published history (newest first)."""
        if not self._authorized(context):
            _refuse(context, grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
            return safety_pb2.ListSnapshotsResponse()
        ids = [self.kernel.snapshot_id()]
        if self.snapshots is not None:
            try:
                ids.extend(await self.snapshots())
            except Exception:  # the active snapshot alone still answers the question
                log.exception("kernel: reading the snapshot history failed")
        return safety_pb2.ListSnapshotsResponse(snapshots=list(dict.fromkeys(ids)))

    async def _answer(self, method: str, request: CheckRequest, context: Any) -> CheckResponse:
        if not self._authorized(context):
            return _refuse(context, grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
        mode = _metadata(context).get(wire.MODE_KEY, "")
        try:
            response, answer = await self._decide(method, mode, request)
        except InvalidJobError as exc:
            return _invalid_job(context, exc)
        except (BadRequestError, wire.RequestContentError) as exc:
            return _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:
            log.exception("kernel: %s failed", method)
            return _refuse(
                context,
                grpc.StatusCode.INTERNAL,
                "the kernel failed to decide this job (the kernel's log has the details)",
            )
        if request.input_content_type in _CORDUM_CONTENT:
            context.set_trailing_metadata(((wire.RECORD_KEY, wire.record_json(answer)),))
        return response

    async def _decide(
        self, method: str, mode: str, request: CheckRequest
    ) -> tuple[CheckResponse, _Answer]:
        if method == "Evaluate" and mode == wire.MODE_OUTPUT:
            if request.input_content_type != wire.OUTPUT_CONTENT_TYPE:
                raise BadRequestError(
                    f"cordum-mode: output needs input_content_type {wire.OUTPUT_CONTENT_TYPE}"
                )
            try:
                job, output, failed = wire.output_from_request(request)
            except ValidationError as exc:
                raise _job_error(exc) from None
            verdict = await self.kernel.evaluate_output(job, output, failed=failed)
            return wire.response_for_verdict(verdict, self.kernel.snapshot_id()), verdict
        if mode and not (method == "Evaluate" and mode == wire.MODE_RECHECK):
            raise BadRequestError(
                f"cordum-mode {mode!r} is not valid on {method}: Evaluate takes"
                f" {wire.MODE_RECHECK!r} or {wire.MODE_OUTPUT!r}, the other methods none"
            )
        if method in ("Simulate", "Explain"):
            subject: Job | dict[str, Any] = (
                wire.fields_from_request(request)
                if request.input_content_type == wire.FIELDS_CONTENT_TYPE
                else _job(request)
            )
            if method == "Simulate":
                record = await self.kernel.simulate(subject)
                return wire.response_for_record(record), record
            explanation = await self.kernel.explain(subject)
            return wire.response_for_record(explanation.record), explanation
        job = _job(request)
        if mode == wire.MODE_RECHECK:
            record = await self.kernel.recheck(job)
        else:
            record = await self.kernel.evaluate(job)
        return wire.response_for_record(record), record

    def _authorized(self, context: Any) -> bool:
        if self._expected is None:
            return True
        given = _metadata(context).get(wire.AUTHORIZATION_KEY, "")
        return hmac.compare_digest(given.encode(), self._expected)


class KernelServer:
    """A SafetyKernel gRPC server on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        snapshots: SnapshotHistory | None = None,
        credentials: grpc.ServerCredentials | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """See :class:`KernelService` for ``token`` and ``snapshots``; ``credentials``
        (``grpc.ssl_server_credentials``) serve TLS instead of plain text."""
        self.service = KernelService(kernel, token=token, snapshots=snapshots)
        self.host = host
        self.port = port
        self.credentials = credentials
        self.max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Listen and serve; returns the bound port (also in :attr:`port`)."""
        server = grpc.aio.server(
            handlers=(self.service.handler(),),
            options=(("grpc.max_receive_message_length", self.max_message_bytes),),
        )
        address = f"{self.host}:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        await server.start()
        self._server = server
        log.info("safety kernel serving gRPC on %s:%d", self.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; calls in flight get ``grace`` seconds to finish."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


_UNAUTHENTICATED = "a valid token is required: send metadata `authorization: Bearer <token>`"


def _metadata(context: Any) -> dict[str, str]:
    """The request's text metadata (binary ``-bin`` entries are not read here)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _job(request: CheckRequest) -> Job:
    if request.input_content_type in (wire.FIELDS_CONTENT_TYPE, wire.OUTPUT_CONTENT_TYPE):
        raise BadRequestError(
            f"input_content_type {request.input_content_type} is not accepted by this call"
            f" ({wire.FIELDS_CONTENT_TYPE}: Simulate and Explain only;"
            f" {wire.OUTPUT_CONTENT_TYPE}: Evaluate with cordum-mode: output only)"
        )
    try:
        return wire.job_from_request(request)
    except ValidationError as exc:
        raise _job_error(exc) from None


def _job_error(exc: ValidationError) -> InvalidJobError:
    """The first problem pydantic found in a job, as the kernel would name it."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "job"
    return InvalidJobError(field, error["msg"])


def _invalid_job(context: Any, exc: InvalidJobError) -> CheckResponse:
    context.set_trailing_metadata(((wire.INVALID_FIELD_KEY, exc.field.encode()),))
    return _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def _refuse(context: Any, code: grpc.StatusCode, details: str) -> CheckResponse:
    """End the call with ``code``; the caller gets the status, not the empty answer."""
    context.set_code(code)
    context.set_details(details)
    return safety_pb2.PolicyCheckResponse()
