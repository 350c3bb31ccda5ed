"""What an agent does through the MCP tools, checked at every step (shared by the
stdio and HTTP tests)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import mcp.types as mcp_types
from jsonschema import Draft202012Validator
from mcp import ClientSession
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.events import event_id
from service.mcp import EXPOSED, tool_name
from tests.api.conftest import SOL, Service


def structured(result: mcp_types.CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call (and its JSON text twin)."""
    assert not result.is_error, [
        c.text for c in result.content if isinstance(c, mcp_types.TextContent)
    ]
    body = result.structured_content
    assert isinstance(body, dict)
    texts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
    assert json.loads(texts[-1]) == body
    return body


def summary(result: mcp_types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, mcp_types.TextContent)
    return first.text


def tool_error(result: mcp_types.CallToolResult) -> dict[str, Any]:
    assert result.is_error
    body = result.structured_content
    assert isinstance(body, dict)
    error: dict[str, Any] = body["error"]
    return error


async def check_tools(session: ClientSession) -> dict[str, mcp_types.Tool]:
    """Every exposed RPC is a tool with valid schemas, documentation and annotations."""
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert list(tools) == [tool_name(e.rpc) for e in EXPOSED]
    for tool in tools.values():
        Draft202012Validator.check_schema(tool.input_schema)
        assert tool.output_schema is not None
        Draft202012Validator.check_schema(tool.output_schema)
        assert tool.input_schema["type"] == "object"
        assert tool.description and len(tool.description) > 40
        assert tool.annotations is not None
    build = tools["build_stake_transaction"]
    assert build.annotations is not None and build.annotations.read_only_hint is True
    submit = tools["submit_transaction"]
    assert submit.annotations is not None
    assert submit.annotations.read_only_hint is False
    assert submit.annotations.destructive_hint is True
    assert submit.annotations.idempotent_hint is True
    stake_schema = build.input_schema
    assert stake_schema["required"] == ["wallet", "amount_lamports"]
    validator = Draft202012Validator(stake_schema)
    assert validator.is_valid({"wallet": "W", "amount_lamports": "2000000000"})
    assert validator.is_valid({"wallet": "W", "amount_lamports": 2 * SOL})
    assert not validator.is_valid({"wallet": "W"})
    assert not validator.is_valid({"wallet": "W", "amount_lamports": "2 SOL"})
    assert not validator.is_valid({"wallet": "W", "amount_lamports": 1, "private_key": "x"})
    return tools


def sign(prepared: dict[str, Any], wallet: Keypair) -> str:
    """What the agent does locally: sign the message bytes, fill the signature slot."""
    assert prepared["required_signers"] == [str(wallet.pubkey())]
    unsigned = VersionedTransaction.from_bytes(base64.b64decode(prepared["transaction"]))
    message = base64.b64decode(prepared["message"])
    assert to_bytes_versioned(unsigned.message) == message
    signed = VersionedTransaction.populate(unsigned.message, [wallet.sign_message(message)])
    return base64.b64encode(bytes(signed)).decode()


async def stake(session: ClientSession, service: Service, wallet: Keypair) -> None:
    """Build -> sign in the test -> submit -> watch -> the stake is on the localnet."""
    info = structured(await session.call_tool("get_network_info", {}))
    assert int(info["minimum_delegation_lamports"]) >= 1
    validators = structured(await session.call_tool("list_validators", {"page_size": 3}))
    assert validators["validators"][0]["rank"] == 1

    address = str(wallet.pubkey())
    # A request_id names an intent of the API key: one per decision (this wallet's stake).
    request = {"wallet": address, "amount_lamports": str(2 * SOL), "request_id": f"mcp-{address}"}
    built_result = await session.call_tool("build_stake_transaction", request)
    built = structured(built_result)
    prepared = built["transaction"]
    # uint64 are decimal strings; bytes base64; enums by name.
    assert built["stake_lamports"] == str(2 * SOL)
    assert prepared["version"] == "TRANSACTION_VERSION_V0"
    text = summary(built_result)
    assert f"must be signed by: {address}" in text
    assert "Stake.DelegateStake" in text
    assert "Total debit from the wallet: 2.00" in text
    assert "service fee" in text and "network fee" in text
    fees = prepared["fees"]
    assert int(fees["total_debit_lamports"]) == (
        2 * SOL
        + int(fees["rent_exempt_reserve_lamports"])
        + int(fees["service_fee_lamports"])
        + int(fees["network_fee_lamports"])
        + int(fees["priority_fee_lamports"])
    )

    signed = sign(prepared, wallet)
    submitted = structured(
        await session.call_tool(
            "submit_transaction", {"transaction": signed, "commitment": "COMMITMENT_CONFIRMED"}
        )
    )
    signature = submitted["signature"]
    assert submitted["status"]["state"] in (
        "TRANSACTION_STATE_CONFIRMED",
        "TRANSACTION_STATE_FINALIZED",
    )

    watched_result = await session.call_tool(
        "watch_transaction", {"signature": signature, "commitment": "COMMITMENT_CONFIRMED"}
    )
    watched = structured(watched_result)
    assert watched["complete"] is True
    assert watched["messages"][-1]["status"]["state"] in (
        "TRANSACTION_STATE_CONFIRMED",
        "TRANSACTION_STATE_FINALIZED",
    )
    status = structured(await session.call_tool("get_transaction_status", {"signature": signature}))
    assert status["status"]["signature"] == signature
    assert f"Transaction {signature}:" in summary(
        await session.call_tool("get_transaction_status", {"signature": signature})
    )

    positions = structured(await session.call_tool("list_stake_accounts", {"wallet": address}))
    [account] = positions["stake_accounts"]
    assert account["address"] == built["stake_account"]
    assert account["delegated_lamports"] == str(2 * SOL)
    assert account["voter"] == service.vote_account

    # And on the chain itself: the delegation the agent signed.
    on_chain = (
        await service.rpc.get_account_info(Pubkey.from_string(built["stake_account"]))
    ).value
    assert on_chain is not None
    data = bytes(on_chain.data)
    assert str(Pubkey(data[124:156])) == service.vote_account
    assert struct.unpack_from("<Q", data, 156)[0] == 2 * SOL
    assert str(Pubkey(data[44:76])) == address

    # The same decision again: refused with the landed signature; get_intent says so.
    again = tool_error(await session.call_tool("build_stake_transaction", request))
    assert (again["code"], again["reason"]) == ("ALREADY_EXISTS", "INTENT_ALREADY_LANDED")
    assert again["metadata"]["signature"] == signature
    intent = structured(
        await session.call_tool("get_intent", {"request_id": request["request_id"]})
    )
    assert intent["intent"]["state"] == "INTENT_STATE_LANDED"
    assert intent["intent"]["signature"] == signature
    assert prepared["receipt"]["key_id"].startswith("rk_")


async def watch_events(session: ClientSession, wallet: Keypair) -> None:
    """After the stake: the agent reads its events, from the start of the history, then
    resumes after the last one (collected for the adapter's --stream-window)."""
    address = str(wallet.pubkey())
    arguments = {"wallets": [address], "types": ["transaction.confirmed"]}
    result = structured(
        await session.call_tool("watch_events", {**arguments, "since_event_id": event_id(0)})
    )
    assert result["complete"] is False  # a stream of events never ends by itself
    [message] = result["messages"]
    event = message["event"]
    assert event["type"] == "transaction.confirmed" and event["wallet"] == address
    assert event["transaction"]["state"] == "TRANSACTION_STATE_CONFIRMED"
    resumed = structured(
        await session.call_tool("watch_events", {**arguments, "since_event_id": event["event_id"]})
    )
    assert resumed["messages"] == []


async def errors_round_trip(session: ClientSession, wallet: Keypair) -> None:
    """A service error, a schema error and a private key come back as tool errors a
    model can act on."""
    address = str(wallet.pubkey())
    below = await session.call_tool(
        "build_stake_transaction", {"wallet": address, "amount_lamports": 1000}
    )
    error = tool_error(below)
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["reason"] == "BELOW_MINIMUM_DELEGATION"
    assert error["domain"] == "agentstaking.v1"
    assert "minimum delegation" in error["hint"]
    assert [v["field"] for v in error["field_violations"]] == ["amount_lamports"]
    assert "minimum_lamports" in error["metadata"]
    assert "BELOW_MINIMUM_DELEGATION" in summary(below) and "Hint:" in summary(below)

    wrong = await session.call_tool(
        "build_stake_transaction",
        {"wallet": 42, "amont_lamports": "secret-looking-value", "options": {"memo": 7}},
    )
    error = tool_error(wrong)
    assert error["reason"] == "INVALID_TOOL_ARGUMENTS"
    fields = {v["field"]: v["description"] for v in error["field_violations"]}
    assert set(fields) == {"wallet", "amont_lamports", "amount_lamports", "options.memo"}
    assert fields["amount_lamports"] == "required"
    assert fields["wallet"] == "must be of type string"
    assert "unknown field" in fields["amont_lamports"]
    # Values given are never echoed back.
    assert "secret-looking-value" not in json.dumps(error) + summary(wrong)

    secret = str(wallet)  # the agent's keypair, pasted where the wallet goes
    refused = await session.call_tool(
        "build_stake_transaction", {"wallet": secret, "amount_lamports": str(2 * SOL)}
    )
    error = tool_error(refused)
    assert error["reason"] == "PRIVATE_KEY_REFUSED"
    assert [v["field"] for v in error["field_violations"]] == ["wallet"]
    assert secret not in json.dumps(refused.model_dump(mode="json"))
    # Inside a sentence, or as the text of a keypair file: refused all the same, and
    # no part of it comes back.
    raw = list(bytes(wallet))
    for tool, arguments in [
        ("get_intent", {"request_id": f"my key is {secret}"}),
        ("list_stake_accounts", {"wallet": json.dumps(raw)}),
        ("list_stake_accounts", {"wallet": json.dumps(raw, separators=(",", ":"))}),
    ]:
        refused = await session.call_tool(tool, arguments)
        error = tool_error(refused)
        assert error["reason"] == "PRIVATE_KEY_REFUSED", error
        assert [v["field"] for v in error["field_violations"]] == list(arguments)
        answer = json.dumps(refused.model_dump(mode="json"))
        for leak in (secret[:12], "{}, {}, {}".format(*raw), "{},{},{}".format(*raw)):
            assert leak not in answer

    # Values the schema admits but the request cannot hold, each named by its field.
    mistakes: list[tuple[str, dict[str, Any], str, str]] = [
        ("get_network_info", {"bogus": 1}, "bogus", "unknown field; the tool takes no arguments"),
        (
            "build_stake_transaction",
            {"wallet": address, "amount_lamports": "99999999999999999999999"},
            "amount_lamports",
            "must be at most 18446744073709551615",
        ),
        ("submit_transaction", {"transaction": "not base64 !!"}, "transaction", "must be base64"),
    ]
    for tool, arguments, field, violation in mistakes:
        error = tool_error(await session.call_tool(tool, arguments))
        assert error["reason"] == "INVALID_TOOL_ARGUMENTS"
        [found] = error["field_violations"]
        assert found["field"] == field
        assert found["description"].startswith(violation), found

    missing = await session.call_tool(
        "get_transaction_status", {"signature": str(Keypair().sign_message(b"never sent"))}
    )
    assert tool_error(missing)["code"] == "NOT_FOUND"
