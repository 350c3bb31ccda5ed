"""Argument values that fit the input schema but not the proto JSON parser, by field.

JSON Schema cannot bound a 64-bit integer given as a decimal string, nor say that a
string is base64 or an RFC 3339 timestamp. `google.protobuf.json_format` refuses
such values with a message that quotes them and names no field; this walk over the
request's descriptor names each field instead (and never the value), so a model
can correct them all at once. Values of the wrong JSON type are left to the schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from service.mcp._schema import _I64_MAX, _I64_MIN, _U64_MAX, _is_map, message_type_of

Path = tuple[str | int, ...]

_UNSIGNED_64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_SIGNED_64 = (
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
)
_RANGES = {
    **{kind: (0, _U64_MAX) for kind in _UNSIGNED_64},
    **{kind: (_I64_MIN, _I64_MAX) for kind in _SIGNED_64},
}
_DECIMAL = re.compile(r"-?[0-9]+")
# Standard or URL-safe alphabet, padding optional (as json_format reads it).
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*")

_WELL_KNOWN_TEXT = {
    "google.protobuf.Timestamp": (
        timestamp_pb2.Timestamp,
        'must be an RFC 3339 timestamp such as "2030-01-01T00:00:00Z"',
    ),
    "google.protobuf.Duration": (duration_pb2.Duration, 'must be a duration such as "1.5s"'),
    "google.protobuf.FieldMask": (
        field_mask_pb2.FieldMask,
        'must be field paths in lowerCamelCase separated by commas, such as "url,eventTypes"',
    ),
}


def value_problems(
    arguments: Any, descriptor: Descriptor, path: Path = ()
) -> Iterator[tuple[Path, str]]:
    """(path, what is wrong) for every value of `arguments` json_format would refuse."""
    if not isinstance(arguments, dict):
        return
    for name, value in arguments.items():
        field = descriptor.fields_by_name.get(name) if isinstance(name, str) else None
        if field is None:
            continue  # an unknown name: the schema's to report
        here = (*path, name)
        if _is_map(field):
            if isinstance(value, dict):
                entry = message_type_of(field).fields_by_name["value"]
                for key, item in value.items():
                    yield from _single(item, entry, (*here, str(key)))
        elif field.is_repeated:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    yield from _single(item, field, (*here, i))
        else:
            yield from _single(value, field, here)


def _single(value: Any, field: FieldDescriptor, path: Path) -> Iterator[tuple[Path, str]]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = message_type_of(field)
        well_known = _WELL_KNOWN_TEXT.get(message.full_name)
        if well_known is None:
            if not message.full_name.startswith("google.protobuf."):
                yield from value_problems(value, message, path)
        elif isinstance(value, str):
            message_class, description = well_known
            try:
                message_class().FromJsonString(value)
            except ValueError:
                yield path, description
    elif field.type in _RANGES and isinstance(value, str) and _DECIMAL.fullmatch(value):
        low, high = _RANGES[field.type]
        # A decimal string longer than any 64-bit value is out of range (and int()
        # of a very long one would refuse to convert).
        number = int(value) if len(value) <= 21 else (low - 1 if value[0] == "-" else high + 1)
        if number > high:
            yield path, f"must be at most {high}"
        elif number < low:
            yield path, f"must be at least {low}"
    elif (
        field.type == FieldDescriptor.TYPE_BYTES
        and isinstance(value, str)
        and not _is_base64(value)
    ):
        yield path, "must be base64 (standard or URL-safe alphabet, padding optional)"


def _is_base64(text: str) -> bool:
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if not _BASE64.fullmatch(body) or len(body) % 4 == 1:
        return False
    return padding == 0 or (padding <= 2 and len(text) % 4 == 0)
