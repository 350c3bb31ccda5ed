"""Values at the edges of their types are INVALID_ARGUMENT naming the field; nothing the
caller sent comes back unbounded; fees the caller sets have caps."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import grpc
import pytest
from agentstaking.v1 import (
    events_pb2,
    keys_pb2,
    liquid_staking_pb2,
    stake_management_pb2,
    staking_pb2,
    staking_pb2_grpc,
    types_pb2,
)
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from solders.keypair import Keypair

from service.keys import KeyPolicy
from tests._grpc_auth import keyed_channel

from ._helpers import rich_details
from .conftest import SOL, Service

TIMESTAMPS = [
    timestamp_pb2.Timestamp(seconds=253_402_300_800),  # year 10000
    timestamp_pb2.Timestamp(seconds=-62_135_596_801),  # before year 1
    timestamp_pb2.Timestamp(seconds=2**62),
    timestamp_pb2.Timestamp(seconds=1_900_000_000, nanos=-1),
    timestamp_pb2.Timestamp(seconds=1_900_000_000, nanos=10**9),
]
DURATIONS = [
    duration_pb2.Duration(seconds=2**62),
    duration_pb2.Duration(seconds=-(2**62)),
    duration_pb2.Duration(seconds=1, nanos=-5),
    duration_pb2.Duration(seconds=0, nanos=2 * 10**9),
]


def _assert_invalid(error: grpc.aio.AioRpcError, field: str) -> None:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    details = rich_details(error)
    assert [v.field for v in details["BadRequest"].field_violations] == [field]


@pytest.mark.parametrize("stamp", TIMESTAMPS, ids=str)
async def test_timestamps_out_of_range(service: Service, stamp: timestamp_pb2.Timestamp) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as created:
        await service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="x", scopes=["staking"], expire_time=stamp)
        )
    _assert_invalid(created.value, "expire_time")
    key = (
        await service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="y", scopes=["staking"])
        )
    ).api_key
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await service.keys.UpdateApiKey(
            keys_pb2.UpdateApiKeyRequest(
                api_key=keys_pb2.ApiKey(name=key.name, expire_time=stamp),
                update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
            )
        )
    _assert_invalid(updated.value, "api_key.expire_time")


@pytest.mark.parametrize("duration", DURATIONS, ids=str)
async def test_durations_out_of_range(service: Service, duration: duration_pb2.Duration) -> None:
    key = (
        await service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="z", scopes=["staking"])
        )
    ).api_key
    with pytest.raises(grpc.aio.AioRpcError) as rotated:
        await service.keys.RotateApiKey(
            keys_pb2.RotateApiKeyRequest(name=key.name, grace_period=duration)
        )
    _assert_invalid(rotated.value, "grace_period")


async def test_a_megabyte_of_update_mask_is_refused_without_being_echoed(
    service: Service,
) -> None:
    key = (
        await service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="m", scopes=["staking"])
        )
    ).api_key
    for paths in (["display_name." + "a" * 900_000], ["p"] * 100_000):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.keys.UpdateApiKey(
                keys_pb2.UpdateApiKeyRequest(
                    api_key=keys_pb2.ApiKey(name=key.name, display_name="n"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        _assert_invalid(refused.value, "update_mask")
        trailers = refused.value.trailing_metadata() or ()
        assert sum(len(k) + len(v) for k, v in trailers) < 4096


async def test_long_input_is_quoted_within_bounds(service: Service) -> None:
    """A field violation that quotes its input quotes a bounded part of it."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.keys.GetApiKey(keys_pb2.GetApiKeyRequest(name="x" * 200_000))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details() or "") <= 1024
    trailers = refused.value.trailing_metadata() or ()
    assert sum(len(k) + len(v) for k, v in trailers) < 4096


def _build(price: int | None, limit: int = 0) -> staking_pb2.BuildStakeTransactionRequest:
    options = types_pb2.TransactionOptions(compute_unit_limit=limit)
    if price is not None:
        options.compute_unit_price_micro_lamports = price
    return staking_pb2.BuildStakeTransactionRequest(
        wallet=str(Keypair().pubkey()), amount_lamports=2 * SOL, options=options
    )


async def test_a_priority_fee_over_the_maximum_is_refused(service: Service) -> None:
    # 2^63 micro-lamports per unit: a debit of about 1.3e19 lamports before the cap.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildStakeTransaction(_build(2**63))
    _assert_invalid(refused.value, "options.compute_unit_price_micro_lamports")
    info = rich_details(refused.value)["ErrorInfo"]
    assert info.reason == "PRIORITY_FEE_TOO_HIGH"
    cap = int(info.metadata["max_priority_fee_lamports"])
    assert cap == service.server.settings.max_priority_fee_lamports
    # The largest price that fits, as the metadata says, is accepted.
    largest = int(info.metadata["max_compute_unit_price_micro_lamports"])
    limit = int(info.metadata["compute_unit_limit"])
    built = await service.staking.BuildStakeTransaction(_build(largest, limit))
    assert built.transaction.fees.priority_fee_lamports <= cap
    with pytest.raises(grpc.aio.AioRpcError):
        await service.staking.BuildStakeTransaction(_build(largest + 1, limit))


async def test_a_keys_policy_caps_the_priority_fee_lower(service: Service) -> None:
    assert service.server.keys is not None
    _, secret = await service.server.keys.create(
        display_name="frugal",
        scopes=["staking"],
        policy=KeyPolicy(max_priority_fee_lamports=1000),
    )
    async with keyed_channel(service.address, secret) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.BuildStakeTransaction(_build(10**6, 200_000))  # 200,000 lamports
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        info = rich_details(refused.value)["ErrorInfo"]
        assert info.reason == "POLICY_MAX_PRIORITY_FEE_EXCEEDED"
        assert info.metadata["max_priority_fee_lamports"] == "1000"
        built = await stub.BuildStakeTransaction(_build(5000, 200_000))  # 1,000 lamports
        assert built.transaction.fees.priority_fee_lamports == 1000
    # The policy field round-trips through KeyService.
    listed = await service.keys.ListApiKeys(keys_pb2.ListApiKeysRequest(page_size=500))
    frugal = [k for k in listed.api_keys if k.display_name == "frugal"]
    assert frugal[0].policy.max_priority_fee_lamports == 1000


async def test_policy_lists_are_capped(service: Service) -> None:
    wallets = [str(Keypair().pubkey()) for _ in range(1001)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(
                display_name="big",
                scopes=["staking"],
                policy=keys_pb2.KeyPolicy(allowed_wallets=wallets),
            )
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


_TOKEN = "INVALID_PAGE_TOKEN"
_LISTS: dict[str, Callable[[str], Message]] = {
    "StakingService/ListStakeAccounts": lambda wallet: staking_pb2.ListStakeAccountsRequest(
        wallet=wallet
    ),
    "StakingService/ListValidators": lambda _: staking_pb2.ListValidatorsRequest(),
    "StakingService/ListStakePools": lambda _: liquid_staking_pb2.ListStakePoolsRequest(),
    "EventService/ListWebhooks": lambda _: events_pb2.ListWebhooksRequest(),
    "KeyService/ListApiKeys": lambda _: keys_pb2.ListApiKeysRequest(),
}


@pytest.mark.parametrize("method", sorted(_LISTS))
async def test_every_list_names_its_paging_mistake_with_the_documented_reason(
    service: Service, method: str
) -> None:
    wallet = str(Keypair().pubkey())
    # GetRewards: tests/rewards (it reads the chain before the token, which is bound to
    # the accounts it finds). KeyService is admin-only; the other lists take the staking key.
    secret = service.admin_secret if method.startswith("KeyService") else service.staking_secret
    async with keyed_channel(service.address, secret) as channel:
        await _refuse_bad_paging(channel, method, wallet)


async def _refuse_bad_paging(channel: grpc.aio.Channel, method: str, wallet: str) -> None:
    for field, value, reason in [
        ("page_size", -1, "INVALID_PAGE_SIZE"),
        ("page_token", "not-a-token", _TOKEN),
        # Nested deeper than the JSON parser recurses.
        ("page_token", base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(), _TOKEN),
    ]:
        request = _LISTS[method](wallet)
        setattr(request, field, value)
        call = channel.unary_unary(
            f"/agentstaking.v1.{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request)
        _assert_invalid(refused.value, field)
        details = rich_details(refused.value)
        assert details["ErrorInfo"].reason == reason, (method, field)
        assert [v.reason for v in details["BadRequest"].field_violations] == [reason]


# Program and sysvar ids whose bytes are ed25519 points: on the curve, yet no one can
# sign for them.
_ON_CURVE_IDS = [
    "11111111111111111111111111111111",
    "Stake11111111111111111111111111111111111111",
    "SysvarC1ock11111111111111111111111111111111",
    "SysvarRent111111111111111111111111111111111",
]


@pytest.mark.parametrize("wallet", _ON_CURVE_IDS)
@pytest.mark.parametrize("simulate", [False, True], ids=["built", "simulated"])
async def test_a_program_or_sysvar_id_is_no_wallet(
    service: Service, wallet: str, simulate: bool
) -> None:
    options = types_pb2.TransactionOptions(simulate=simulate)
    calls: list[Awaitable[object]] = [
        service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=wallet, amount_lamports=2 * SOL, options=options
            )
        ),
        service.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(
                wallet=wallet, amount_lamports=SOL, options=options
            )
        ),
        service.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(
                wallet=wallet, amount_lamports=SOL, options=options
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        _assert_invalid(refused.value, "wallet")
        (violation,) = rich_details(refused.value)["BadRequest"].field_violations
        assert "program or sysvar id" in violation.description


async def test_a_build_names_every_invalid_field_at_once(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet="not an address",
                amount_lamports=0,
                request_id="r" * 257,
                options=types_pb2.TransactionOptions(memo="m" * 201),
            )
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(refused.value)
    assert details["ErrorInfo"].reason == "INVALID_FIELDS"
    assert {(v.field, v.reason) for v in details["BadRequest"].field_violations} == {
        ("wallet", "INVALID_ADDRESS"),
        ("amount_lamports", "INVALID_AMOUNT"),
        ("request_id", "INVALID_REQUEST_ID"),
        ("options.memo", "MEMO_TOO_LONG"),
    }
    # The same in the other builds: the fields they share.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(
                wallet="not an address",
                withdraw_all=True,
                request_id="r" * 257,
                options=types_pb2.TransactionOptions(memo="m" * 201),
            )
        )
    assert [v.field for v in rich_details(refused.value)["BadRequest"].field_violations] == [
        "wallet",
        "request_id",
        "options.memo",
    ]


async def test_a_merge_of_too_many_sources_is_one_violation(service: Service) -> None:
    """A list longer than a transaction holds is refused as a whole, not entry by entry
    (a megabyte of bad entries would otherwise hold the serving loop for seconds)."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildMergeTransaction(
            staking_pb2.BuildMergeTransactionRequest(
                wallet=str(Keypair().pubkey()),
                destination_stake_account=str(Keypair().pubkey()),
                source_stake_accounts=["a"] * 50_000,
            )
        )
    _assert_invalid(refused.value, "source_stake_accounts")
    assert "at most 8" in (refused.value.details() or "")


async def test_an_unknown_enum_is_named_with_every_other_invalid_field(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet="bad!",
                vote_account="vote!",
                amount_lamports=0,
                options=types_pb2.TransactionOptions(version=99, priority_level=99),  # type: ignore[arg-type]
            )
        )
    fields = {v.field for v in rich_details(refused.value)["BadRequest"].field_violations}
    assert fields == {
        "wallet",
        "vote_account",
        "amount_lamports",
        "options.version",
        "options.priority_level",
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildMoveStakeTransaction(
            stake_management_pb2.BuildMoveStakeTransactionRequest(
                wallet="bad!",
                source_stake_account=str(Keypair().pubkey()),
                destination_stake_account=str(Keypair().pubkey()),
                move_type=99,  # type: ignore[arg-type]
                options=types_pb2.TransactionOptions(version=99),  # type: ignore[arg-type]
            )
        )
    fields = {v.field for v in rich_details(refused.value)["BadRequest"].field_violations}
    assert {"wallet", "move_type", "options.version"} <= fields


async def test_a_program_or_sysvar_id_is_no_authority(service: Service, wallet: Keypair) -> None:
    """An authority no one can sign as would leave the stake unmanageable for good."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()),
                amount_lamports=2 * SOL,
                stake_authority="SysvarC1ock11111111111111111111111111111111",
            )
        )
    _assert_invalid(refused.value, "stake_authority")
    built = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()), amount_lamports=2 * SOL
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildAuthorizeTransaction(
            stake_management_pb2.BuildAuthorizeTransactionRequest(
                wallet=str(wallet.pubkey()),
                stake_account=built.stake_account,
                new_authority="Stake11111111111111111111111111111111111111",
                authority_type=stake_management_pb2.STAKE_AUTHORITY_TYPE_WITHDRAWER,
                unchecked=True,
            )
        )
    _assert_invalid(refused.value, "new_authority")


async def test_a_list_names_every_invalid_field_at_once(service: Service) -> None:
    async def fields(call: Awaitable[object]) -> set[str]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        return {v.field for v in rich_details(refused.value)["BadRequest"].field_violations}

    wallet = str(Keypair().pubkey())
    assert await fields(
        service.staking.ListStakeAccounts(
            staking_pb2.ListStakeAccountsRequest(wallet="x", page_size=-1, page_token="zz")
        )
    ) == {"wallet", "page_size"}  # a token is bound to a wallet: none to hold it to
    assert await fields(
        service.staking.ListStakeAccounts(
            staking_pb2.ListStakeAccountsRequest(wallet=wallet, page_size=-1, page_token="zz")
        )
    ) == {"page_size", "page_token"}
    assert await fields(
        service.staking.ListValidators(
            staking_pb2.ListValidatorsRequest(
                page_size=-1, page_token="zz", max_commission_percent=101
            )
        )
    ) == {"page_size", "page_token", "max_commission_percent"}


async def test_control_characters_sent_come_back_escaped(service: Service) -> None:
    """Terminal escapes and bidi overrides in a value the error quotes are escaped in
    every text of the status, metadata included."""
    hostile = "a\x1b[31mRED\r\u202eX"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(wallet=hostile, amount_lamports=SOL)
        )
    details = rich_details(refused.value)
    texts = [
        refused.value.details() or "",
        *details["ErrorInfo"].metadata.values(),
        *(v.description for v in details["BadRequest"].field_violations),
    ]
    assert all("\x1b" not in t and "\u202e" not in t and "\r" not in t for t in texts)
    assert "\\x1b[31mRED" in details["ErrorInfo"].metadata["value"]


async def test_bad_entries_of_a_list_are_named_by_index(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.staking.BuildMergeTransaction(
            staking_pb2.BuildMergeTransactionRequest(
                wallet=str(Keypair().pubkey()),
                destination_stake_account=str(Keypair().pubkey()),
                source_stake_accounts=["bad", str(Keypair().pubkey()), "worse"],
            )
        )
    violations = rich_details(refused.value)["BadRequest"].field_violations
    assert [v.field for v in violations] == [
        "source_stake_accounts[0]",
        "source_stake_accounts[2]",
    ]
