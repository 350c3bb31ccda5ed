"""Failed calls as MCP tool errors that a model can correct itself from.

A gRPC error's rich details (google.rpc ErrorInfo, BadRequest, RetryInfo,
QuotaFailure in the `grpc-status-details-bin` trailer) become one structured
`error` object (code, message, reason, domain, metadata, hint, field_violations,
retry_delay_seconds, quota_violations) and a few lines of text. Tool arguments that
do not match the tool's input schema are answered the same way before any call is
made. Argument values are never repeated in an error: a model that pasted a secret
into the wrong field must not see it echoed (or logged) anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import mcp.types as mcp_types
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jsonschema import ValidationError

INVALID_TOOL_ARGUMENTS = "INVALID_TOOL_ARGUMENTS"
"""Reason of an error raised before the call: the arguments do not fit the schema."""

PRIVATE_KEY_REFUSED = "PRIVATE_KEY_REFUSED"
"""Reason of an error raised before the call: an argument holds a private key."""


@dataclass
class ToolError:
    """Everything a caller needs to correct a failed call."""

    code: str
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    hint: str = ""
    field_violations: list[dict[str, str]] = field(default_factory=list)
    retry_delay_seconds: float | None = None
    quota_violations: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        for name in ("reason", "domain", "hint"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        if self.metadata:
            body["metadata"] = self.metadata
        if self.field_violations:
            body["field_violations"] = self.field_violations
        if self.retry_delay_seconds is not None:
            body["retry_delay_seconds"] = self.retry_delay_seconds
        if self.quota_violations:
            body["quota_violations"] = self.quota_violations
        return body

    def text(self, tool: str) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        lines = [f"{tool} failed: {self.code}{reason}: {self.message}"]
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        if self.field_violations:
            lines.append("Fix these arguments:")
            lines += [f"- {v['field']}: {v['description']}" for v in self.field_violations]
        for quota in self.quota_violations:
            lines.append(f"Limit: {quota.get('subject', '')} {quota.get('description', '')}")
        if self.retry_delay_seconds is not None:
            lines.append(f"Retry after {self.retry_delay_seconds:g} s.")
        return "\n".join(lines)

    def result(self, tool: str) -> mcp_types.CallToolResult:
        body = {"error": self.as_json()}
        return mcp_types.CallToolResult(
            content=[
                mcp_types.TextContent(text=self.text(tool)),
                mcp_types.TextContent(text=json.dumps(body)),
            ],
            structured_content=body,
            is_error=True,
        )


def from_rpc_error(error: grpc.aio.AioRpcError) -> ToolError:
    """The status of a failed call with its rich details, if any."""
    found = ToolError(code=error.code().name, message=error.details() or "")
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None  # a trailer that disagrees with the status: keep code and message
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found.reason, found.domain = info.reason, info.domain
            found.metadata = dict(info.metadata)
            found.hint = found.metadata.pop("hint", "")
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.field_violations += [
                _violation(v.field, v.description, v.reason) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            found.retry_delay_seconds = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            found.quota_violations += [
                {"subject": v.subject, "description": v.description} for v in quota.violations
            ]
    return found


def _violation(name: str, description: str, reason: str = "") -> dict[str, str]:
    body = {"field": name, "description": description}
    if reason:
        body["reason"] = reason
    return body


def from_schema_errors(
    errors: Iterable[ValidationError],
    value_problems: Iterable[tuple[Iterable[Any], str]] = (),
) -> ToolError:
    """Arguments that do not match the tool's input schema, one violation per problem.

    `value_problems` are (path, description) of values the request message cannot
    hold (a uint64 above its range, bytes not in base64); one at a path the schema
    already refused is the same problem, said once.
    """
    errors = list(errors)
    found = [(list(error.absolute_path), v) for error in errors for v in _violations(error)]
    refused = [list(error.absolute_path) for error in errors]
    found += [
        (list(path), _violation(_join(path), text, INVALID_TOOL_ARGUMENTS))
        for path, text in value_problems
        if list(path) not in refused
    ]
    found.sort(key=lambda item: [str(part) for part in item[0]])
    return ToolError(
        code=grpc.StatusCode.INVALID_ARGUMENT.name,
        message="the arguments do not match the tool's input schema",
        reason=INVALID_TOOL_ARGUMENTS,
        hint="Correct the fields named in field_violations (see the tool's inputSchema).",
        field_violations=[violation for _, violation in found],
    )


def private_key_refused(paths: Iterable[str]) -> ToolError:
    """Arguments that hold a private key: refused, and sent nowhere."""
    return ToolError(
        code=grpc.StatusCode.INVALID_ARGUMENT.name,
        message="an argument holds a private key; the call was not made and the "
        "arguments were not sent or stored anywhere",
        reason=PRIVATE_KEY_REFUSED,
        hint="Never pass a private key to any tool. Pass the wallet's public key (base58) "
        "and sign the returned message locally.",
        field_violations=[
            _violation(path, "holds a private key (a keypair)", PRIVATE_KEY_REFUSED)
            for path in paths
        ],
    )


def unparsable(message: str) -> ToolError:
    """Arguments the schema admits but the proto JSON parser does not (no value echoed)."""
    return ToolError(
        code=grpc.StatusCode.INVALID_ARGUMENT.name,
        message=message,
        reason=INVALID_TOOL_ARGUMENTS,
        hint="Use the proto JSON forms: 64-bit integers as decimal strings, bytes as "
        "base64, enums by name, timestamps in RFC 3339.",
    )


def _join(path: Iterable[Any], name: str | None = None) -> str:
    """`options.memo`, `source_stake_accounts[2]`; "" for the arguments as a whole."""
    text = ""
    for part in [*path, *([name] if name is not None else [])]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _violations(error: ValidationError) -> list[dict[str, str]]:
    """What is wrong, from the failing keyword and the schema (never the value given)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    expected: Any = error.validator_value
    path = list(error.absolute_path)
    given = error.instance if isinstance(error.instance, dict) else {}
    if keyword == "required":
        return [
            _violation(_join(path, name), "required", INVALID_TOOL_ARGUMENTS)
            for name in expected
            if name not in given
        ]
    if keyword == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        if known:
            text = f"unknown field; the known fields are {', '.join(known)}"
        elif path:
            text = "unknown field; this object has no fields"
        else:
            text = "unknown field; the tool takes no arguments"
        return [
            _violation(_join(path, name), text, INVALID_TOOL_ARGUMENTS)
            for name in sorted(given)
            if name not in known
        ]
    if keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        text = f"must be of type {' or '.join(kinds)}"
    elif keyword == "enum":
        text = f"must be one of {', '.join(map(str, expected))}"
    elif keyword == "pattern":
        text = f"must match the pattern {expected}"
    elif keyword in ("minimum", "maximum"):
        text = f"must be {'at least' if keyword == 'minimum' else 'at most'} {expected}"
    elif keyword == "not":
        names = expected.get("required", []) if isinstance(expected, dict) else []
        text = f"set at most one of {', '.join(names)}"
    else:
        text = f"does not satisfy the schema's {keyword!r} rule"
    return [_violation(_join(path), text, INVALID_TOOL_ARGUMENTS)]
