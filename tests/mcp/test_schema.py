"""Tools, schemas and documentation derived from the descriptors (no server)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from google.protobuf import json_format
from jsonschema import Draft202012Validator
from solders.keypair import Keypair

from service.mcp import (
    EXPOSED,
    HIDDEN,
    SERVICES,
    Exposure,
    message_schema,
    staking_tools,
    tool_name,
)
from service.mcp._guard import private_key_paths
from service.mcp._schema import comments

TOOLS = staking_tools()


def test_every_rpc_is_exposed_or_deliberately_hidden() -> None:
    """A new StakingService or EventService RPC needs its line in EXPOSED (or HIDDEN)."""
    exposed = [e.rpc for e in EXPOSED]
    assert len(exposed) == len(set(exposed))
    assert set(exposed) | HIDDEN == {m for s in SERVICES for m in s.methods_by_name}
    assert not set(exposed) & HIDDEN


def test_a_line_is_all_a_new_rpc_needs() -> None:
    """Name, schemas and description follow from the descriptor alone."""
    [tool] = staking_tools((Exposure(rpc="ListStakeAccounts", read_only=True),)).values()
    assert tool.name == "list_stake_accounts"
    assert tool.description.startswith("Lists the wallet's stake positions")
    assert tool.input_schema["required"] == ["wallet"]
    with pytest.raises(ValueError, match="no RPC 'GetEverything'"):
        staking_tools((Exposure(rpc="GetEverything", read_only=True),))


@pytest.mark.parametrize("name", list(TOOLS))
def test_schemas_are_valid_and_documented(name: str) -> None:
    tool = TOOLS[name]
    for schema in (tool.input_schema, tool.output_schema):
        Draft202012Validator.check_schema(schema)
    # Every argument has its proto comment (buf lint COMMENTS makes sure one exists).
    for field, prop in _properties(tool.input_schema):
        assert prop.get("description"), field
    definition = tool.definition()
    assert definition.annotations is not None
    assert definition.annotations.read_only_hint is tool.exposure.read_only


def _properties(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, prop in schema.get("properties", {}).items():
        found.append((prefix + name, prop))
        nested = prop.get("items", prop)
        found += _properties(nested, f"{prefix}{name}.")
    return found


def test_required_fields_follow_the_comments() -> None:
    required = {name: t.input_schema.get("required", []) for name, t in TOOLS.items()}
    assert required == {
        "get_network_info": [],
        "list_validators": [],
        "list_stake_accounts": ["wallet"],
        "get_rewards": [],
        "estimate_rewards": ["amount_lamports"],
        "build_stake_transaction": ["wallet", "amount_lamports"],
        "build_unstake_transaction": ["wallet"],
        "build_withdraw_transaction": ["wallet"],
        "build_merge_transaction": ["wallet", "destination_stake_account"],
        "build_split_transaction": ["wallet", "amount_lamports", "stake_account"],
        "build_move_stake_transaction": [
            "wallet",
            "amount_lamports",
            "source_stake_account",
            "destination_stake_account",
        ],
        "build_authorize_transaction": [
            "wallet",
            "stake_account",
            "new_authority",
            "authority_type",
        ],
        "build_set_lockup_transaction": ["wallet", "stake_account", "lockup"],
        "build_redelegate_transaction": ["wallet", "stake_account", "vote_account"],
        "list_stake_pools": [],
        "get_stake_pool": ["stake_pool"],
        "build_liquid_stake_transaction": ["wallet", "stake_pool"],
        "build_liquid_unstake_transaction": ["wallet", "stake_pool", "pool_tokens"],
        "build_nonce_account_transaction": ["wallet"],
        "get_intent": ["request_id"],
        "submit_transaction": ["transaction"],
        "get_transaction_status": ["signature"],
        "watch_transaction": ["signature"],
        "watch_events": [],
        "list_webhooks": [],
        "get_webhook": ["name"],
        "list_webhook_deliveries": ["name"],
        "send_test_event": ["name"],
        "update_webhook": [],
        "delete_webhook": ["name"],
    }
    nonce = TOOLS["build_stake_transaction"].input_schema["properties"]["options"]["properties"]
    # nonce_account, or managed: neither is required on its own.
    assert "required" not in nonce["durable_nonce"]
    assert set(nonce["durable_nonce"]["properties"]) == {
        "nonce_account",
        "nonce_authority",
        "managed",
    }


@pytest.mark.parametrize(
    ("arguments", "valid"),
    [
        ({"wallet": "W", "amount_lamports": "18446744073709551615"}, True),
        ({"wallet": "W", "amount_lamports": 1}, True),
        ({"wallet": "W", "amount_lamports": "-1"}, False),
        ({"wallet": "W", "amount_lamports": -1}, False),
        ({"wallet": "W", "amount_lamports": 1.5}, False),
        ({"wallet": "W", "amount_lamports": 2**64}, False),
        ({"wallet": "W", "amount_lamports": 1, "lockup": {"unix_timestamp": "-5"}}, True),
        (
            {"wallet": "W", "amount_lamports": 1, "options": {"version": "TRANSACTION_VERSION_V0"}},
            True,
        ),
        ({"wallet": "W", "amount_lamports": 1, "options": {"version": "V0"}}, False),
        (
            {
                "wallet": "W",
                "amount_lamports": 1,
                "options": {"priority_level": "PRIORITY_LEVEL_LOW", "compute_unit_limit": 4},
            },
            True,
        ),
        (
            {
                "wallet": "W",
                "amount_lamports": 1,
                "options": {
                    "priority_level": "PRIORITY_LEVEL_LOW",
                    "compute_unit_price_micro_lamports": "5",
                },
            },
            False,
        ),
        ({"wallet": "W", "amount_lamports": 1, "options": {"compute_unit_limit": -1}}, False),
        ({"wallet": "W", "amount_lamports": 1, "walet": "typo"}, False),
    ],
)
def test_input_schema_matches_what_the_json_parser_accepts(
    arguments: dict[str, Any], valid: bool
) -> None:
    """What the schema admits, json_format parses; what it refuses is a mistake."""
    tool = TOOLS["build_stake_transaction"]
    assert Draft202012Validator(tool.input_schema).is_valid(arguments) is valid
    if valid:
        json_format.ParseDict(arguments, staking_pb2.BuildStakeTransactionRequest())


def test_output_schema_describes_what_json_format_writes() -> None:
    response = staking_pb2.BuildStakeTransactionResponse(
        stake_account="S",
        stake_lamports=2**64 - 1,
        transaction=types_pb2.PreparedTransaction(
            transaction=b"\x00" * 10,
            message=b"\x01",
            required_signers=["W"],
            version=types_pb2.TRANSACTION_VERSION_LEGACY,
            fees=types_pb2.FeeBreakdown(total_debit_lamports=5),
            simulation=types_pb2.Simulation(
                balance_changes=[types_pb2.BalanceChange(delta_lamports=-3)],
                error=types_pb2.TransactionError(instruction_index=2),
            ),
        ),
    )
    response.expected_active_time.FromSeconds(1_900_000_000)
    body = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    schema = TOOLS["build_stake_transaction"].output_schema
    Draft202012Validator(schema).validate(body)
    assert body["stake_lamports"] == str(2**64 - 1)
    assert body["transaction"]["transaction"] == base64.b64encode(b"\x00" * 10).decode()
    assert schema["properties"]["expected_active_time"]["format"] == "date-time"
    # A number where the mapping writes a string is refused.
    body["stake_lamports"] = 5
    assert not Draft202012Validator(schema).is_valid(body)


def test_descriptions_come_from_the_proto_comments() -> None:
    schema = message_schema(staking_pb2.SubmitTransactionRequest.DESCRIPTOR, "input")
    commitment = schema["properties"]["commitment"]["description"]
    assert commitment.startswith("Commitment to wait for before returning.")
    assert "- COMMITMENT_CONFIRMED: Confirmed:" in commitment
    assert comments()["agentstaking.v1.StakingService.SubmitTransaction"].startswith(
        "Relays a signed transaction"
    )
    unstake = TOOLS["build_unstake_transaction"].description
    assert "\n- stake_account only: deactivate the whole account;" in unstake
    assert not unstake.count("Request for")


def test_streaming_rpcs_collect_their_messages() -> None:
    watch = TOOLS["watch_transaction"]
    assert watch.streaming
    assert watch.output_schema["required"] == ["messages", "complete"]
    assert "complete" in watch.description


def test_keypairs_are_found_in_every_encoding() -> None:
    keypair = Keypair()
    raw = bytes(keypair)
    for text in (str(keypair), base64.b64encode(raw).decode(), raw.hex()):
        args = {"wallet": "W", "options": {"memo": text}}
        assert list(private_key_paths(args)) == ["options.memo"]
    assert list(private_key_paths({"sources": ["a", list(raw)]})) == ["sources[1]"]
    # Look-alikes are not keys: a signature (64 bytes), an address, a transaction.
    signature = keypair.sign_message(b"m")
    harmless = {
        "signature": str(signature),
        "wallet": str(keypair.pubkey()),
        "transaction": base64.b64encode(bytes(signature) * 3).decode(),
        "numbers": list(bytes(signature)),
    }
    assert list(private_key_paths(harmless)) == []


def test_the_tool_table_of_the_docs_matches_the_tools() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "mcp.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", text, re.MULTILINE)
    assert rows == [(tool_name(e.rpc), e.rpc) for e in EXPOSED]
