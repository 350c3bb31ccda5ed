"""Every RPC's request, as bytes no client library would send: random bytes, and
messages built field by field from the descriptors with values anywhere in their
types' ranges (timestamps in the year 200 000, durations of a million years, huge
integers, any text), some cut short or with invalid UTF-8 in a string field.

Whatever arrives, the answer is a precise status (never UNKNOWN or INTERNAL), a
message that does not decode is INVALID_ARGUMENT with BadRequest, the answer's
metadata stays small, and the server logs no traceback (checked when the module's server
stops, see conftest).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agentstaking.v1
import grpc
import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._server import ServeProcess

FieldDescriptor = _descriptor.FieldDescriptor


def _services() -> list[_descriptor.ServiceDescriptor]:
    """Every service of the agentstaking.v1 API (as the generated modules define them),
    and the standard health service."""
    found = [health_pb2.DESCRIPTOR.services_by_name["Health"]]
    package = Path(agentstaking.v1.__file__).parent
    for module in sorted(package.glob("*_pb2.py")):
        generated = importlib.import_module(f"agentstaking.v1.{module.stem}")
        found.extend(generated.DESCRIPTOR.services_by_name.values())
    return found


SERVICES = _services()
METHODS = [method for service in SERVICES for method in service.methods]
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED}
# Metadata a client accepts by default (grpc's max_metadata_size is 8 KiB; the
# answer must fit with room to spare).
MAX_TRAILERS = 8 * 1024

_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _message_class(descriptor: _descriptor.Descriptor) -> type[Message]:
    pool = descriptor_pool.Default()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INTS:
        low, high = _INTS[field.type]
        return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, 1]))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if field.type == FieldDescriptor.TYPE_DOUBLE else 32)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=80)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=1300)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)
    raise AssertionError(f"unhandled field type {field.type}")


def message_strategy(
    descriptor: _descriptor.Descriptor, depth: int = 0
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with any subset of fields set to any values."""
    cls = _message_class(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            assert field.message_type is not None
            value: st.SearchStrategy[Any] = message_strategy(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        chosen = draw(
            st.sets(st.sampled_from(sorted(fields)), max_size=len(fields))
            if fields
            else st.just(set())
        )
        for name in chosen:
            value = draw(fields[name])
            target = getattr(message, name)
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                try:
                    setattr(message, name, value)
                except ValueError:  # an enum value the runtime refuses to set
                    continue
        return message

    return build()


def _invalid_utf8(descriptor: _descriptor.Descriptor) -> list[bytes]:
    """For each string field: a message holding bytes that are not UTF-8 in it."""
    found = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            found.append(bytes([field.number << 3 | 2, 3]) + b"\xff\xfe\xfd")
    return found


def payloads(descriptor: _descriptor.Descriptor) -> st.SearchStrategy[bytes]:
    built = message_strategy(descriptor).map(lambda m: m.SerializeToString())
    return st.one_of(
        st.binary(max_size=600),
        built,
        built.flatmap(lambda raw: st.integers(0, max(0, len(raw) - 1)).map(lambda n: raw[:n])),
        st.sampled_from(_invalid_utf8(descriptor) or [b"\x00"]),
    )


@pytest.fixture(scope="module")
def channel(served: ServeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address) as opened:
        yield opened


def call(
    channel: grpc.Channel, method: _descriptor.MethodDescriptor, payload: bytes, key: str
) -> tuple[grpc.StatusCode, Any]:
    """(code, the error when not OK) of one call with ``payload`` as its request bytes."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata: Any = (("authorization", f"Bearer {key}"),)
    try:
        if method.server_streaming:
            stream: Any = channel.unary_stream(path)
            for _ in stream(payload, metadata=metadata, timeout=3):
                pass
        else:
            unary: Any = channel.unary_unary(path)
            unary(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        failed: Any = error
        return failed.code(), failed
    return grpc.StatusCode.OK, None


def check_answer(
    code: grpc.StatusCode,
    error: Any,
    payload: bytes,
    method: _descriptor.MethodDescriptor,
) -> None:
    assert code not in NEVER, (code, error, payload)
    if error is None:
        return
    trailers: list[tuple[str, str | bytes]] = list(error.trailing_metadata() or ())
    size = sum(len(key) + len(value) for key, value in trailers)
    assert size < MAX_TRAILERS, (code, size)
    details = dict(trailers).get("grpc-status-details-bin")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and details is None:
        return  # the client's own deadline on a watch
    if method.containing_service.full_name == "grpc.health.v1.Health" and details is None:
        return  # the standard health service answers NOT_FOUND for unknown services
    assert isinstance(details, bytes), (code, error.details())
    status = status_pb2.Status.FromString(details)
    kinds = {detail.TypeName() for detail in status.details}
    assert "google.rpc.ErrorInfo" in kinds, (code, kinds)
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    if info.reason == "MALFORMED_REQUEST":
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "google.rpc.BadRequest" in kinds


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_any_bytes_get_a_precise_answer(
    method: _descriptor.MethodDescriptor, served: ServeProcess, channel: grpc.Channel
) -> None:
    # The admin key carries both scopes: every method is reached past authentication.
    key = served.keys["admin"]

    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=payloads(method.input_type))
    def answers(payload: bytes) -> None:
        code, error = call(channel, method, payload, key)
        check_answer(code, error, payload, method)

    answers()


@pytest.mark.parametrize(
    ("method", "payload"),
    [(method, payload) for method in METHODS for payload in _invalid_utf8(method.input_type)[:1]],
    ids=lambda value: value.name if hasattr(value, "name") else "",
)
def test_invalid_utf8_in_a_string_field_is_invalid_argument(
    method: _descriptor.MethodDescriptor,
    payload: bytes,
    served: ServeProcess,
    channel: grpc.Channel,
) -> None:
    code, error = call(channel, method, payload, served.keys["admin"])
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, error)
    check_answer(code, error, payload, method)
