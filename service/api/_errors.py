"""The one place where domain errors become gRPC statuses with rich details."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.chain import rpc_deadline
from service.core.errors import ERROR_DOMAIN, DomainError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


# Bounds on what an error sends back: messages may quote the caller's input, and
# trailers larger than the client's metadata limit would turn the answer into a
# RESOURCE_EXHAUSTED of the transport instead of the error itself.
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256
MAX_METADATA_ENTRIES = 32
MAX_VIOLATIONS = 50
# Most bytes the status takes on the wire: `grpc-message` (percent-encoded) and
# `grpc-status-details-bin` (base64). gRPC clients refuse trailers over 8 KiB (their
# default metadata limit) with RESOURCE_EXHAUSTED, so field violations and attached
# messages go in only while they fit, the message saying how many fields there were.
MAX_STATUS_WIRE_BYTES = 7 * 1024
MAX_MESSAGE_WIRE_BYTES = 2 * 1024


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, control and format characters but the line
    break escaped (``\\x1b``, ``\\u202e``): what a caller sent must not steer a
    terminal or a log reader that shows the error."""
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode() for c in text
        )
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _message_wire_bytes(text: str) -> int:
    """Bytes of `grpc-message`: printable ASCII as is (but %), any other byte as %XX."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode())


def _bounded_message(text: str) -> str:
    message = _bounded(text, MAX_MESSAGE_CHARS)
    while _message_wire_bytes(message) > MAX_MESSAGE_WIRE_BYTES:
        message = _bounded(message, len(message) * 3 // 4)
    return message


def status_for(error: DomainError, *, retry_after: float | None = None) -> status_pb2.Status:
    """`google.rpc.Status` for a domain error: ErrorInfo, BadRequest, RetryInfo, QuotaFailure.

    RetryInfo comes from `retry_after` (or the error's own `retry_after` attribute),
    QuotaFailure from the error's `quota_violations` (dicts of Violation fields). Every
    text is bounded (see the ``MAX_*`` constants): nothing a caller sent is echoed back
    unbounded, and the whole status fits a client's trailer limit.
    """
    code = grpc.StatusCode[error.kind.value]
    message = _bounded_message(error.message)
    # Bytes of the serialized status that base64 of the rest of the budget holds.
    budget = (MAX_STATUS_WIRE_BYTES - _message_wire_bytes(message)) * 3 // 4 - 16
    metadata = {
        _bounded(key, MAX_DETAIL_CHARS): _bounded(value, MAX_DETAIL_CHARS)
        for key, value in list(error.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    if error.hint:
        metadata.setdefault("hint", _bounded(error.hint, MAX_DETAIL_CHARS))
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    # A third of the budget at most for ErrorInfo; the hint and the first entries stay.
    while info.ByteSize() > budget // 3 and len(info.metadata) > 1:
        del info.metadata[next(k for k in reversed(list(info.metadata)) if k != "hint")]
    others: list[Any] = []
    retry = retry_after if retry_after is not None else getattr(error, "retry_after", None)
    if retry is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry * 1e9))
        others.append(error_details_pb2.RetryInfo(retry_delay=delay))
    quota = getattr(error, "quota_violations", ())
    if quota:
        others.append(
            error_details_pb2.QuotaFailure(
                violations=[error_details_pb2.QuotaFailure.Violation(**v) for v in quota]
            )
        )
    # Room for ErrorInfo's note of the violations left out (added below if any).
    size = info.ByteSize() + 64 + sum(o.ByteSize() + 64 for o in others)
    bad_request = error_details_pb2.BadRequest()
    for violation in error.violations[:MAX_VIOLATIONS]:
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=_bounded(violation.field, MAX_DETAIL_CHARS),
            description=_bounded(violation.description, MAX_DETAIL_CHARS),
            reason=violation.reason,
        )
        if size + entry.ByteSize() + 8 > budget:
            break
        bad_request.field_violations.append(entry)
        size += entry.ByteSize() + 8
    if len(bad_request.field_violations) < len(error.violations):
        info.metadata["field_violations_omitted"] = str(
            len(error.violations) - len(bad_request.field_violations)
        )
    details: list[Any] = [info]
    if error.violations:
        details.append(bad_request)
    details += others
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    # Messages the error carries (full proto name, then the encodings to try, the most
    # complete first, each with a note of what it leaves out), as long as they fit.
    size = sum(len(p.SerializeToString()) for p in packed)
    for type_name, variants in getattr(error, "attachments", ()):
        packed[0].Unpack(info)
        for value, note in variants:
            holder = any_pb2.Any(type_url=f"type.googleapis.com/{type_name}", value=value)
            if size + len(holder.SerializeToString()) + 256 <= budget:
                packed.append(holder)
                size += len(holder.SerializeToString())
                if note:
                    info.metadata["attachment"] = _bounded(note, MAX_DETAIL_CHARS)
                break
        else:
            info.metadata["attachment"] = _bounded(
                f"{type_name} left out: too large for a status", MAX_DETAIL_CHARS
            )
        packed[0].Pack(info)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


INTERNAL_STATUS = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any],
    status: status_pb2.Status,
    metadata: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """Abort the call with `status`, its details in the `grpc-status-details-bin` trailer
    (after `metadata`, extra trailers such as `x-ratelimit-*`)."""
    converted = rpc_status.to_status(status)
    await context.abort(
        converted.code,
        converted.details,
        trailing_metadata=(*metadata, *converted.trailing_metadata),
    )
    raise AssertionError("unreachable: abort raises")


async def _abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    if isinstance(exc, DomainError):
        if _caller_gone(context):
            # No one to answer: gRPC core would refuse the status (logging a traceback
            # of its own); the call ends as cancelled, or past its deadline.
            raise asyncio.CancelledError from None
        await abort_with(context, status_for(exc))
    # Never leak internal text: log it with the traceback, answer a plain INTERNAL.
    log.exception("unexpected error in %s", type(exc).__name__)
    await abort_with(context, INTERNAL_STATUS)


def _caller_gone(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    remaining = context.time_remaining()
    return context.cancelled() or (remaining is not None and remaining <= 0)


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises an internal exception that must pass through untouched.
    return isinstance(exc, grpc.aio.AbortError)


def handle_errors(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Map domain errors raised by a unary servicer method to statuses."""

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        try:
            # Solana RPCs made for this call fit inside its deadline (failover included).
            with rpc_deadline(context.time_remaining()):
                return await method(self, request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            await _abort_for(context, exc)

    return wrapper


def handle_stream_errors(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]:
    """The streaming twin of `handle_errors`."""

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            # grpc drives the stream from one task, so the deadline is set and reset in
            # the same context.
            with rpc_deadline(context.time_remaining()):
                async for item in method(self, request, context):
                    yield item
        except Exception as exc:
            if _is_abort(exc):
                raise
            await _abort_for(context, exc)

    return wrapper
