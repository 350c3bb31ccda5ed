"""The MCP tools: one per exposed StakingService or EventService RPC, derived from its
descriptor.

`EXPOSED` is the one list to extend when a service gains an RPC that agents use: its
name and annotations. Everything else (tool name, description, input and output
schemas, how it is called) follows from the descriptor; `HIDDEN` names the RPCs
deliberately not offered (a test fails on an RPC that is in neither).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mcp.types as mcp_types
from agentstaking.v1 import events_pb2, staking_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from service.mcp._schema import doc, message_doc, message_schema

SERVICE: ServiceDescriptor = staking_pb2.DESCRIPTOR.services_by_name["StakingService"]
SERVICES: tuple[ServiceDescriptor, ...] = (
    SERVICE,
    events_pb2.DESCRIPTOR.services_by_name["EventService"],
)
"""The services whose RPCs may be tools (RPC names are unique across them)."""


@dataclass(frozen=True, kw_only=True)
class Exposure:
    """An RPC offered as a tool, with the hints a host uses to decide whether to ask
    its user first (MCP tool annotations)."""

    rpc: str
    read_only: bool
    """Changes nothing anywhere: reads, and builds (an unsigned transaction moves no
    lamport until its owner signs and submits it)."""
    destructive: bool = False
    """May make irreversible changes (meaningful when not read-only)."""
    idempotent: bool = False
    """Calling again with the same arguments has no further effect (when not read-only)."""
    open_world: bool = False
    """Reaches beyond the service: the Solana network."""


EXPOSED: tuple[Exposure, ...] = (
    Exposure(rpc="GetNetworkInfo", read_only=True),
    Exposure(rpc="ListValidators", read_only=True),
    Exposure(rpc="ListStakeAccounts", read_only=True),
    Exposure(rpc="GetRewards", read_only=True),
    Exposure(rpc="EstimateRewards", read_only=True),
    Exposure(rpc="BuildStakeTransaction", read_only=True),
    Exposure(rpc="BuildUnstakeTransaction", read_only=True),
    Exposure(rpc="BuildWithdrawTransaction", read_only=True),
    Exposure(rpc="BuildMergeTransaction", read_only=True),
    Exposure(rpc="BuildSplitTransaction", read_only=True),
    Exposure(rpc="BuildMoveStakeTransaction", read_only=True),
    Exposure(rpc="BuildAuthorizeTransaction", read_only=True),
    Exposure(rpc="BuildSetLockupTransaction", read_only=True),
    Exposure(rpc="BuildRedelegateTransaction", read_only=True),
    Exposure(rpc="ListStakePools", read_only=True),
    Exposure(rpc="GetStakePool", read_only=True),
    Exposure(rpc="BuildLiquidStakeTransaction", read_only=True),
    Exposure(rpc="BuildLiquidUnstakeTransaction", read_only=True),
    Exposure(rpc="BuildNonceAccountTransaction", read_only=True),
    Exposure(rpc="GetIntent", read_only=True),
    # Sends a signed transaction to the cluster: irreversible once it lands; the same
    # signed transaction again is answered from the relay (idempotent by signature).
    Exposure(
        rpc="SubmitTransaction", read_only=False, destructive=True, idempotent=True, open_world=True
    ),
    Exposure(rpc="GetTransactionStatus", read_only=True),
    Exposure(rpc="WatchTransaction", read_only=True),
    # Events: a stream collected for a while (resumed with since_event_id), the
    # webhooks the key has and their deliveries.
    Exposure(rpc="WatchEvents", read_only=True),
    Exposure(rpc="ListWebhooks", read_only=True),
    Exposure(rpc="GetWebhook", read_only=True),
    Exposure(rpc="ListWebhookDeliveries", read_only=True),
    # Makes the service POST a test event to the webhook's endpoint.
    Exposure(rpc="SendTestEvent", read_only=False, open_world=True),
    Exposure(rpc="UpdateWebhook", read_only=False, idempotent=True),
    Exposure(rpc="DeleteWebhook", read_only=False, destructive=True, idempotent=True),
)
"""Every RPC an agent uses, in the order tools are listed."""

HIDDEN: frozenset[str] = frozenset({"CreateWebhook", "RotateWebhookSecret"})
"""RPCs deliberately not offered as tools: CreateWebhook and RotateWebhookSecret
return a webhook's signing secret, which belongs in the receiver's configuration, not
in a model's context (nor in a host's transcript of tool results)."""


def tool_name(rpc: str) -> str:
    """`BuildStakeTransaction` -> `build_stake_transaction`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()


def _title(rpc: str) -> str:
    return tool_name(rpc).replace("_", " ").capitalize()


@dataclass(frozen=True)
class StakingTool:
    """One tool: its RPC's descriptor and how the tool presents it."""

    exposure: Exposure
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return tool_name(self.method.name)

    @property
    def streaming(self) -> bool:
        """A server-streaming RPC: its messages are collected into one result."""
        return bool(self.method.server_streaming)

    @cached_property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @cached_property
    def description(self) -> str:
        parts = [doc(self.method.full_name), message_doc(self.method.input_type)]
        if self.streaming:
            parts.append(
                "The result collects the stream's messages in `messages`, in order; "
                "`complete` is false when the stream was still open when the tool "
                "stopped waiting (call again to go on watching)."
            )
        return "\n\n".join(p for p in parts if p)

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        return message_schema(self.method.input_type, "input")

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        schema = message_schema(self.method.output_type, "output")
        if not self.streaming:
            return schema
        dialect = schema.pop("$schema")
        return {
            "$schema": dialect,
            "type": "object",
            "properties": {
                "messages": {
                    "type": "array",
                    "items": schema,
                    "description": "The stream's messages, in order.",
                },
                "complete": {
                    "type": "boolean",
                    "description": "Whether the stream ended (else the tool stopped waiting).",
                },
            },
            "required": ["messages", "complete"],
        }

    def definition(self) -> mcp_types.Tool:
        exposure = self.exposure
        return mcp_types.Tool(
            name=self.name,
            title=_title(self.method.name),
            description=self.description,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            annotations=mcp_types.ToolAnnotations(
                title=_title(self.method.name),
                read_only_hint=exposure.read_only,
                destructive_hint=exposure.destructive,
                idempotent_hint=exposure.idempotent,
                open_world_hint=exposure.open_world,
            ),
        )


def _method(rpc: str) -> MethodDescriptor | None:
    for service in SERVICES:
        method = service.methods_by_name.get(rpc)
        if method is not None:
            return method
    return None


def staking_tools(exposed: tuple[Exposure, ...] = EXPOSED) -> dict[str, StakingTool]:
    """The tools by name, in `exposed` order.

    Raises:
        ValueError: an exposed RPC that no service of :data:`SERVICES` has.
    """
    tools: dict[str, StakingTool] = {}
    for exposure in exposed:
        method = _method(exposure.rpc)
        if method is None:
            names = " or ".join(s.name for s in SERVICES)
            raise ValueError(f"{names} has no RPC {exposure.rpc!r} to expose as a tool")
        if method.client_streaming:
            raise ValueError(f"{exposure.rpc} streams requests: it cannot be one tool call")
        tool = StakingTool(exposure, method)
        tools[tool.name] = tool
    return tools


def instructions() -> str:
    """What a model reads once, at connection: how the service works and how to use it."""
    return "\n\n".join(
        [
            "Non-custodial Solana staking through agent-staking. Never send a private "
            "key or seed phrase to any tool: no tool accepts one. Build tools return an "
            "unsigned transaction; sign its `message` (base64) locally with each key in "
            "`required_signers`, put each 64-byte signature into the transaction's "
            "signature slots in that order, and pass the signed transaction (base64) to "
            "submit_transaction. Then get_transaction_status or watch_transaction.",
            "Amounts are integer lamports (1 SOL = 1000000000 lamports); 64-bit numbers "
            "are decimal strings in results and may be strings or integers in arguments. "
            "Addresses are base58. A failed call returns an error result with `code`, a "
            "stable `reason`, a `hint`, the `field_violations` to fix and, when waiting "
            "helps, `retry_delay_seconds`.",
            doc(SERVICE.full_name),
        ]
    )
