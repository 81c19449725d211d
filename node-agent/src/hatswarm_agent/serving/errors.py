"""Domain errors and the one place that turns them into gRPC status codes.

Servicers, the data plane and the dispatcher raise these; `grpc_errors` (a decorator on every
RPC method) maps them, so no request can surface a backend's stack trace as INTERNAL when it is
the caller's mistake. Two errors of the layers below are mapped here too: BackendError
(backends/base.py) and ParameterError (protocol/params.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.generation import BackendBusyError, GenerationRequestError
from hatswarm_agent.protocol.params import ParameterError

log = logging.getLogger(__name__)


class AgentError(Exception):
    """Base of every error the agent answers on purpose; `reason` labels failure metrics."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"


class ModelNotFoundError(AgentError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class UnknownAdapterError(ModelNotFoundError):
    """A request named an adapter its model version does not have (NOT_FOUND)."""

    def __init__(self, adapter: str, model: str, version: str, known: Iterable[str] = ()) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"adapter '{adapter}' is not known for model '{model}' version '{version}' "
            f"(known: {names})"
        )


class ModelNotReadyError(AgentError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "not_ready"


class InvalidInputError(AgentError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class QueueFullError(AgentError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"


class PreconditionError(AgentError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "failed_precondition"


class ShuttingDownError(AgentError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "shutting_down"


class ForwardedError(AgentError):
    """A status a peer (or the cloud) answered with, passed on to the caller as it was."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = code.name.lower()


class SaturatedError(AgentError):
    """Every replica is at its queue limit and this request's priority is shed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "saturated"


class NoReplicaError(AgentError):
    """No replica in the pool (nor the cloud) can serve the model now."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "no_replica"


class NoTableError(AgentError):
    """A pool agent asked for a model it does not have before its routing table arrived."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "no_table"


class NotGenerativeError(InvalidInputError):
    """The model exists but cannot do what was asked (generate text, or embed it)."""


class StreamBrokenError(AgentError):
    """A generation that had started streaming could not finish (its node was lost): the
    stream ends with this error, never silently short."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "stream_broken"


class DeadlineError(AgentError):
    """The request's budget ran out while it was being routed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, metric reason) for any exception a servicer let escape."""
    if isinstance(exc, AgentError):
        return exc.code, str(exc), exc.reason
    if isinstance(exc, ParameterError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), InvalidInputError.reason
    if isinstance(exc, BackendBusyError):  # a generative model's sequence slots are full
        return QueueFullError.code, str(exc), QueueFullError.reason
    if isinstance(exc, GenerationRequestError):
        return InvalidInputError.code, str(exc), InvalidInputError.reason
    if isinstance(exc, BackendError):
        return grpc.StatusCode.INTERNAL, f"backend error: {exc}", "backend"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", "internal"


# A status message travels in a header: past the peer's header limit (8 KiB by default) the
# caller would get RESOURCE_EXHAUSTED instead of the status (e.g. a 1 MB model name echoed).
MAX_MESSAGE_CHARS = 1024


def bounded(message: str) -> str:
    """`message`, cut to MAX_MESSAGE_CHARS with a note saying how long it was."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... (message of {len(message)} characters truncated)"


_Self = TypeVar("_Self")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Handler = Callable[[_Self, _Req, Any], Awaitable[_Resp]]


def grpc_errors(fn: Handler[_Self, _Req, _Resp]) -> Handler[_Self, _Req, _Resp]:
    """Wrap an async servicer method so domain errors become their status codes."""

    @functools.wraps(fn)
    async def wrapper(self: _Self, request: _Req, context: Any) -> _Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:  # context.abort's own exception: through untouched
            raise
        except Exception as exc:
            code, message, _ = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", fn.__name__)
        # Abort outside the handler and without the request: grpc keeps the abort (and the
        # frames of its traceback) with the call's state for as long as it likes, and through
        # them whatever they reference (a 32 MB request stayed resident after its refusal).
        del request
        await context.abort(code, bounded(message))
        raise AssertionError("unreachable: context.abort raises")

    return wrapper
