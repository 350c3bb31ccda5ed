"""Every bad input gets its precise status, ErrorInfo reason and field violations."""

from __future__ import annotations

import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from solders.keypair import Keypair

from ._helpers import rich_details
from .conftest import SOL, Service

StakeRequest = staking_pb2.BuildStakeTransactionRequest


async def _fails(service: Service, request: StakeRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.staking.BuildStakeTransaction(request)
    return caught.value


WALLET = str(Keypair().pubkey())


@pytest.mark.parametrize(
    ("request_fields", "code", "reason", "fields"),
    [
        (
            {"wallet": "not-base58!", "amount_lamports": SOL},
            "INVALID_ARGUMENT",
            "INVALID_ADDRESS",
            ["wallet"],
        ),
        ({"wallet": "", "amount_lamports": SOL}, "INVALID_ARGUMENT", "INVALID_ADDRESS", ["wallet"]),
        (
            {"wallet": "1" * 60, "amount_lamports": SOL},
            "INVALID_ARGUMENT",
            "INVALID_ADDRESS",
            ["wallet"],
        ),
        (
            {"wallet": WALLET, "amount_lamports": SOL, "vote_account": "xyz"},
            "INVALID_ARGUMENT",
            "INVALID_ADDRESS",
            ["vote_account"],
        ),
        (
            {"wallet": WALLET, "amount_lamports": SOL // 2},
            "INVALID_ARGUMENT",
            "BELOW_MINIMUM_DELEGATION",
            ["amount_lamports"],
        ),
        (
            {"wallet": WALLET, "amount_lamports": 0},
            "INVALID_ARGUMENT",
            "INVALID_AMOUNT",
            ["amount_lamports"],
        ),
        (
            {"wallet": WALLET, "amount_lamports": SOL, "vote_account": str(Keypair().pubkey())},
            "NOT_FOUND",
            "VOTE_ACCOUNT_NOT_FOUND",
            ["vote_account"],
        ),
        (
            {
                "wallet": WALLET,
                "amount_lamports": SOL,
                "options": types_pb2.TransactionOptions(memo="x" * 201),
            },
            "INVALID_ARGUMENT",
            "MEMO_TOO_LONG",
            ["options.memo"],
        ),
        (
            {"wallet": WALLET, "amount_lamports": SOL, "request_id": "r" * 300},
            "INVALID_ARGUMENT",
            "INVALID_REQUEST_ID",
            ["request_id"],
        ),
    ],
)
async def test_invalid_build_requests(
    service: Service, request_fields: dict[str, object], code: str, reason: str, fields: list[str]
) -> None:
    error = await _fails(service, StakeRequest(**request_fields))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode[code]
    details = rich_details(error)
    assert details["ErrorInfo"].reason == reason
    assert details["ErrorInfo"].domain == "agentstaking.v1"
    assert [v.field for v in details["BadRequest"].field_violations] == fields
    # A message a person can act on, and no internals.
    message = error.details() or ""
    assert message and "Traceback" not in message


async def test_several_bad_fields_reported_together(service: Service) -> None:
    error = await _fails(
        service,
        StakeRequest(
            wallet="bad",
            vote_account="also-bad",
            amount_lamports=SOL,
            stake_authority="nope",
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in rich_details(error)["BadRequest"].field_violations}
    assert fields == {"wallet", "vote_account", "stake_authority"}


async def test_vote_account_that_is_not_a_vote_account(service: Service) -> None:
    # The fee wallet exists on chain but is a plain system account.
    error = await _fails(
        service,
        StakeRequest(
            wallet=WALLET, amount_lamports=SOL, vote_account=str(service.fee_wallet.pubkey())
        ),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = rich_details(error)["ErrorInfo"]
    assert info.reason == "VOTE_ACCOUNT_NOT_FOUND"
    assert info.metadata["vote_account"] == str(service.fee_wallet.pubkey())


async def test_insufficient_funds_found_by_simulation(service: Service) -> None:
    poor = Keypair()
    await service.rpc.request_airdrop(poor.pubkey(), SOL)  # less than 2 SOL + rent + fees
    request = StakeRequest(wallet=str(poor.pubkey()), amount_lamports=2 * SOL)
    # Without simulation the build does no per-request RPC and succeeds.
    await service.staking.BuildStakeTransaction(request)
    request.options.simulate = True
    error = await _fails(service, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = rich_details(error)["ErrorInfo"]
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert int(info.metadata["available_lamports"]) == SOL
    assert int(info.metadata["shortfall_lamports"]) > SOL


async def test_unknown_wallet_simulated_is_insufficient_funds(service: Service) -> None:
    error = await _fails(
        service,
        StakeRequest(
            wallet=str(Keypair().pubkey()),
            amount_lamports=SOL,
            options=types_pb2.TransactionOptions(simulate=True),
        ),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_details(error)["ErrorInfo"].reason == "INSUFFICIENT_FUNDS"


async def test_oversized_message_is_refused(service: Service) -> None:
    request = StakeRequest(wallet=WALLET, amount_lamports=SOL, request_id="x" * (1024 * 1024 + 10))
    error = await _fails(service, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is not wedged: the next call works.
    info = await service.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.minimum_delegation_lamports == SOL


async def test_no_rpc_is_left_unimplemented(service: Service) -> None:
    # ListValidators was the last RPC answering UNIMPLEMENTED.
    response = await service.staking.ListValidators(staking_pb2.ListValidatorsRequest())
    assert response.validators


def test_every_domain_error_of_the_service_is_well_formed() -> None:
    """Reasons are UPPER_SNAKE and kinds are gRPC status names, in every package."""
    import re

    import service.server  # noqa: F401  (imports every package that defines errors)
    from service.core.errors import DomainError

    pending: list[type[DomainError]] = [DomainError]
    seen = 0
    while pending:
        cls = pending.pop()
        seen += 1
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", cls.default_reason), cls
        assert grpc.StatusCode[cls.kind.value], cls
        pending.extend(cls.__subclasses__())
    assert seen > 20
