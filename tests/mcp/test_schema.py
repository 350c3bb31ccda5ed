"""Tools, schemas and documentation derived from the descriptors (no server)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.mcp import (
    EXPOSED,
    HIDDEN,
    SERVICES,
    Exposure,
    message_schema,
    staking_tools,
    tool_name,
)
from service.mcp._errors import from_schema_errors
from service.mcp._guard import private_key_paths
from service.mcp._schema import comments
from service.mcp._values import value_problems

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


KEYPAIR = Keypair.from_seed(bytes(range(1, 33)))
RAW = bytes(KEYPAIR)
# The ways a keypair gets pasted: the CLI's base58, base64 (both alphabets, with and
# without padding), hex, and the JSON array of a keypair file in any layout.
KEYPAIR_TEXTS = {
    "base58": str(KEYPAIR),
    "base64": base64.b64encode(RAW).decode(),
    "base64 url-safe unpadded": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
    "hex": RAW.hex(),
    "hex 0x": "0x" + RAW.hex().upper(),
    "keypair file": json.dumps(list(RAW)),
    "keypair file unspaced": json.dumps(list(RAW), separators=(",", ":")),
    "keypair file indented": json.dumps(list(RAW), indent=2),
    "keypair file with tabs": "[\t" + " ,\t".join(map(str, RAW)) + "\r\n]",
}
DELIMITERS = st.sampled_from(list(" \n\t.,:;\"'()<>{}|!?"))


@pytest.mark.parametrize("text", list(KEYPAIR_TEXTS.values()), ids=list(KEYPAIR_TEXTS))
def test_a_keypair_is_found_inside_any_string_at_any_depth(text: str) -> None:
    assert list(private_key_paths({"request_id": f"my key is {text}, keep it"})) == ["request_id"]
    nested = {"wallet": "W", "options": {"memo": "ok", "sources": ["a", {"note": text}]}}
    assert list(private_key_paths(nested)) == ["options.sources[1].note"]
    # An object key is no hiding place either: reported at the object holding it.
    assert list(private_key_paths({"options": {text: 1}})) == ["options"]


@given(
    encoding=st.sampled_from(sorted(KEYPAIR_TEXTS)),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    left=DELIMITERS,
    right=DELIMITERS,
)
def test_a_keypair_between_any_words_is_found(
    encoding: str, before: str, after: str, left: str, right: str
) -> None:
    text = before + left + KEYPAIR_TEXTS[encoding] + right + after
    assert list(private_key_paths({"memo": text})) == ["memo"]


def _signed_transaction() -> str:
    """A real signed wire transaction, base64: what submit_transaction takes."""
    payer = KEYPAIR
    message = MessageV0.try_compile(
        payer.pubkey(),
        [
            transfer(
                TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=5)
            )
        ],
        [],
        Hash.new_unique(),
    )
    return base64.b64encode(bytes(VersionedTransaction(message, [payer]))).decode()


def test_values_that_resemble_keypairs_pass() -> None:
    """64-byte signatures in every encoding, addresses and transactions are not keys."""
    signature = bytes(KEYPAIR.sign_message(b"m"))
    harmless: dict[str, Any] = {
        "signature": str(KEYPAIR.sign_message(b"m")),
        "in text": f"landed as {KEYPAIR.sign_message(b'n')} at slot 9",
        "signature base64": base64.b64encode(signature).decode(),
        "signature hex": signature.hex(),
        "signature array text": json.dumps(list(signature)),
        "wallet": str(KEYPAIR.pubkey()),
        "wallets": [str(Keypair().pubkey()) for _ in range(5)],
        "transaction": _signed_transaction(),
        "memo": "stake 2 SOL with the best validator, epoch 812",
        "numbers": [int(b) for b in signature],
        "amount_lamports": "18446744073709551615",
    }
    assert list(private_key_paths(harmless)) == []


@given(wire=st.binary(min_size=64, max_size=1232), cut=st.integers(0, 1232))
def test_base64_bytes_pass_even_around_a_delimiter(wire: bytes, cut: int) -> None:
    """Any run of a base64 text is tried only as a whole token, and only a real
    keypair's derivation makes it one."""
    text = base64.b64encode(wire).decode()
    assert list(private_key_paths({"transaction": f"{text[:cut]} {text[cut:]}"})) == []


@pytest.mark.parametrize(
    ("tool", "arguments", "problems"),
    [
        (
            "build_stake_transaction",
            {"wallet": "W", "amount_lamports": "18446744073709551616"},
            [(("amount_lamports",), "must be at most 18446744073709551615")],
        ),
        (
            "build_stake_transaction",
            {"wallet": "W", "amount_lamports": "9" * 5000, "lockup": {"unix_timestamp": "-1"}},
            [(("amount_lamports",), "must be at most 18446744073709551615")],
        ),
        (
            "build_stake_transaction",
            {"wallet": "W", "amount_lamports": 1, "lockup": {"unix_timestamp": "-" + "9" * 19}},
            [(("lockup", "unix_timestamp"), "must be at least -9223372036854775808")],
        ),
        (
            "submit_transaction",
            {"transaction": "not base64 !!"},
            [
                (
                    ("transaction",),
                    "must be base64 (standard or URL-safe alphabet, padding optional)",
                )
            ],
        ),
        ("submit_transaction", {"transaction": "AQID"}, []),
        ("submit_transaction", {"transaction": "AQI="}, []),
        ("submit_transaction", {"transaction": "_-8"}, []),
        (
            "update_webhook",
            {"webhook": {"name": "webhooks/w", "create_time": "yesterday"}, "update_mask": "url"},
            [
                (
                    ("webhook", "create_time"),
                    'must be an RFC 3339 timestamp such as "2030-01-01T00:00:00Z"',
                )
            ],
        ),
    ],
)
def test_values_the_request_cannot_hold_are_named_by_field(
    tool: str, arguments: dict[str, Any], problems: list[tuple[tuple[str, ...], str]]
) -> None:
    """What the schema cannot say (uint64 range, base64, timestamps) is found per field;
    whatever passes, json_format parses."""
    request = TOOLS[tool].request_class()
    assert list(value_problems(arguments, TOOLS[tool].method.input_type)) == problems
    if not problems:
        json_format.ParseDict(arguments, request)
    else:
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(arguments, request)


@pytest.mark.parametrize(
    ("arguments", "violations"),
    [
        ({"wallet": "W", "amount_lamports": "-1"}, {"amount_lamports": "must match"}),
        (
            {"wallet": 5, "amount_lamports": "18446744073709551616"},
            {"wallet": "must be of type", "amount_lamports": "must be at most"},
        ),
    ],
)
def test_every_problem_is_one_violation(
    arguments: dict[str, Any], violations: dict[str, str]
) -> None:
    tool = TOOLS["build_stake_transaction"]
    error = from_schema_errors(
        Draft202012Validator(tool.input_schema).iter_errors(arguments),
        value_problems(arguments, tool.method.input_type),
    )
    found = [(v["field"], v["description"]) for v in error.field_violations]
    assert len(found) == len(violations)
    for name, text in found:
        assert text.startswith(violations[name])


def test_the_tool_table_of_the_docs_matches_the_tools() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "mcp.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", text, re.MULTILINE)
    assert rows == [(tool_name(e.rpc), e.rpc) for e in EXPOSED]
