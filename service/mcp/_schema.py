"""JSON Schemas and documentation derived from the agentstaking.v1 proto descriptors.

Pure: descriptors in, dicts and strings out. The schemas describe the proto3 JSON
mapping as `google.protobuf.json_format` reads (tool arguments) and writes (tool
results, field names as in the .proto files):

- 64-bit integers are decimal strings in results; arguments accept a string or an
  integer (a JSON number loses precision above 2^53, so the string is safer);
- `bytes` are base64 strings; enums are their value names;
- `google.protobuf.Timestamp` is an RFC 3339 string, `Duration` a string like "1.5s";
- fields of a `oneof` exclude each other.

Descriptions come from the proto comments (the FileDescriptorSet with source info in
`agentstaking.v1.descriptor_set`). A field whose comment has the sentence
"Required." (or "Required;") is listed in the schema's `required`: the protos say
so in words because proto3 has no required fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any, Literal

from agentstaking.v1 import descriptor_set
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)

Mode = Literal["input", "output"]
"""`input`: what a tool accepts (lenient where proto JSON is); `output`: what it returns."""

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_REQUIRED = re.compile(r"(?:^|[.;]\s)Required[.;]")
_TRIVIAL_LEAD = re.compile(r"^(?:Request|Response) (?:for|of) [\w.]+\.\s*")
_U64_MAX = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
}


@cache
def comments() -> dict[str, str]:
    """Leading comment of every documented element, by full name.

    Keys: `pkg.Message`, `pkg.Message.field`, `pkg.Enum`, `pkg.Enum.VALUE`,
    `pkg.Service`, `pkg.Service.Method`.
    """
    found: dict[str, str] = {}
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.FILE_DESCRIPTOR_SET)
    for file in files.file:
        names = dict(_paths(file))
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name is not None and location.leading_comments.strip():
                found[name] = _clean(location.leading_comments)
    return found


def _paths(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source-info path, full name) of every element of `file`.

    Path numbers are the FileDescriptorProto / DescriptorProto field numbers:
    message_type 4, enum_type 5, service 6; field 2, nested_type 3, enum_type 4
    (in a message); value 2 (in an enum); method 2 (in a service).
    """
    prefix = f"{file.package}." if file.package else ""

    def enum(
        path: tuple[int, ...], scope: str, item: descriptor_pb2.EnumDescriptorProto
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        name = f"{scope}{item.name}"
        yield path, name
        # Enum values are scoped like siblings of the enum (C++ scoping rules) in the
        # pool, but documented per enum here.
        for i, value in enumerate(item.value):
            yield (*path, 2, i), f"{name}.{value.name}"

    def message(
        path: tuple[int, ...], scope: str, item: descriptor_pb2.DescriptorProto
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        name = f"{scope}{item.name}"
        yield path, name
        for i, field in enumerate(item.field):
            yield (*path, 2, i), f"{name}.{field.name}"
        for i, nested in enumerate(item.nested_type):
            yield from message((*path, 3, i), f"{name}.", nested)
        for i, nested_enum in enumerate(item.enum_type):
            yield from enum((*path, 4, i), f"{name}.", nested_enum)

    for i, item in enumerate(file.message_type):
        yield from message((4, i), prefix, item)
    for i, enum_item in enumerate(file.enum_type):
        yield from enum((5, i), prefix, enum_item)
    for i, service in enumerate(file.service):
        yield (6, i), f"{prefix}{service.name}"
        for j, method in enumerate(service.method):
            yield (6, i, 2, j), f"{prefix}{service.name}.{method.name}"


def _clean(comment: str) -> str:
    """A proto comment as prose: lines of a paragraph joined, list items and
    paragraphs kept apart."""
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in comment.splitlines():
        line = raw.strip()
        if not line:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        if line.startswith("- ") and current:
            paragraphs.append(" ".join(current))
            current = []
        current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    text = ""
    for paragraph in paragraphs:
        if text:
            text += "\n" if paragraph.startswith("- ") else "\n\n"
        text += paragraph
    return text


def doc(full_name: str) -> str:
    """The comment of an element, or "" when it has none."""
    return comments().get(full_name, "")


def message_doc(descriptor: Descriptor) -> str:
    """A message's comment without a leading "Request for X." (the tool says that)."""
    return _TRIVIAL_LEAD.sub("", doc(descriptor.full_name)).strip()


def is_required(field: FieldDescriptor) -> bool:
    """Whether the field's comment says it is required."""
    return bool(_REQUIRED.search(doc(field.full_name)))


def message_schema(descriptor: Descriptor, mode: Mode) -> dict[str, Any]:
    """JSON Schema (2020-12) of a message's proto3 JSON form, with documentation."""
    schema = _message(descriptor, mode, ())
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _message(descriptor: Descriptor, mode: Mode, seen: tuple[str, ...]) -> dict[str, Any]:
    known = _WELL_KNOWN.get(descriptor.full_name)
    if known is not None:
        return dict(known)
    if descriptor.full_name in seen:
        # A recursive message: below the first level it is any object.
        return {"type": "object"}
    seen = (*seen, descriptor.full_name)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in descriptor.fields:
        properties[field.name] = _field(field, mode, seen)
        if mode == "input" and is_required(field):
            required.append(field.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if mode == "input":
        # Unknown names are mistakes (a typo would silently be a default value).
        schema["additionalProperties"] = False
        exclusive = [[f.name for f in oneof.fields] for oneof in _real_oneofs(descriptor)]
        rules = [
            {"not": {"required": [a, b]}}
            for names in exclusive
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        ]
        if rules:
            schema["allOf"] = rules
    if required:
        schema["required"] = required
    return schema


def _real_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    """The message's `oneof`s, without the one-field oneofs of proto3 `optional` fields."""
    return [
        oneof
        for oneof in descriptor.oneofs
        if not (len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}")
    ]


def _oneof_note(field: FieldDescriptor) -> str:
    oneof = field.containing_oneof
    if oneof is None or oneof not in _real_oneofs(oneof.containing_type):
        return ""
    others = [f.name for f in oneof.fields if f.name != field.name]
    return f"Set at most one of {field.name} and {', '.join(others)}."


def message_type_of(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def enum_type_of(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None, field.full_name
    return field.enum_type


def _field(field: FieldDescriptor, mode: Mode, seen: tuple[str, ...]) -> dict[str, Any]:
    if _is_map(field):
        value = message_type_of(field).fields_by_name["value"]
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": _single(value, mode, seen),
        }
    elif field.is_repeated:
        schema = {"type": "array", "items": _single(field, mode, seen)}
    else:
        schema = _single(field, mode, seen)
    description = _field_description(field)
    if description:
        schema["description"] = description
    return schema


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and message_type_of(field).GetOptions().map_entry
        and field.is_repeated
    )


def _field_description(field: FieldDescriptor) -> str:
    text = doc(field.full_name)
    note = _oneof_note(field)
    if note:
        text = f"{text}\n\n{note}" if text else note
    if field.type == FieldDescriptor.TYPE_ENUM:
        values = _enum_values_doc(enum_type_of(field))
        if values:
            text = f"{text}\n\n{values}" if text else values
    return text


def _enum_values_doc(enum: EnumDescriptor) -> str:
    lines = []
    for value in enum.values:
        note = doc(f"{enum.full_name}.{value.name}")
        lines.append(f"- {value.name}: {note}" if note else f"- {value.name}")
    return "\n".join(lines)


def _single(field: FieldDescriptor, mode: Mode, seen: tuple[str, ...]) -> dict[str, Any]:
    """Schema of one value of the field (an element, for repeated fields)."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message(message_type_of(field), mode, seen)
    if kind == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in enum_type_of(field).values]}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"type": "number"}
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _int64(mode, 0, _U64_MAX, r"^[0-9]+$")
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _int64(mode, _I64_MIN, _I64_MAX, r"^-?[0-9]+$")
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    raise ValueError(f"no JSON Schema for field {field.full_name} of type {kind}")


def _int64(mode: Mode, low: int, high: int, pattern: str) -> dict[str, Any]:
    if mode == "output":
        # json_format writes 64-bit integers as decimal strings.
        return {"type": "string", "pattern": pattern}
    # `pattern` applies to strings only, minimum/maximum to numbers only.
    return {"type": ["string", "integer"], "pattern": pattern, "minimum": low, "maximum": high}
