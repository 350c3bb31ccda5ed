"""Liquid staking through a real server, against pools on the localnet, judged by the
official JavaScript SDK (@solana/spl-stake-pool) reading the same localnet.

The stake-pool program does not run on the localnet (no package ships it), so no
deposit or withdrawal executes here. What is checked: the service's pool reads against
the SDK's ``stakePoolInfo``; every built transaction against the message compiled from
the SDK's own high-level ``depositSol``/``depositStake``/``withdrawSol``/``withdrawStake``
instructions for the same wallet and amounts (the SDK's ephemeral keys replaced by the
wallet, which signs directly); the quoted amounts against the program's arithmetic;
the errors. The parts of a deposit the localnet can run (the token account creation and
the service fee) are executed on chain.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from agentstaking.v1 import liquid_staking_pb2 as pb
from agentstaking.v1 import staking_pb2, types_pb2
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core.programs import STAKE_POOL_PROGRAM, SYSTEM_PROGRAM, TOKEN_PROGRAM
from service.core.stake_pools import decode_stake_pool
from service.core.tokens import associated_token_address, decode_token_account
from service.localnet import give_pool_tokens
from tests._wait import until
from tests.api._helpers import rich_details, send
from tests.liquid._sdk import oracle_async
from tests.liquid.conftest import FEE_BPS, SOL, Pools
from tests.liquid.test_sdk_instructions import web3js_clock_read_only

NO_PRIORITY = types_pb2.TransactionOptions(priority_level=types_pb2.PRIORITY_LEVEL_NONE)


def decompile(message: Message | MessageV0 | MessageV1) -> list[Instruction]:
    """A message's instructions with their message-level account flags."""
    keys = list(message.account_keys)
    header = message.header
    signed: int = header.num_required_signatures

    def writable(i: int) -> bool:
        if i < signed:
            return i < signed - header.num_readonly_signed_accounts
        return i < len(keys) - header.num_readonly_unsigned_accounts

    return [
        Instruction(
            keys[ix.program_id_index],
            bytes(ix.data),
            [AccountMeta(keys[i], i < signed, writable(i)) for i in bytes(ix.accounts)],
        )
        for ix in message.instructions
    ]


def from_sdk(ix: dict[str, Any], replace: dict[str, Pubkey]) -> Instruction:
    """An SDK instruction, its ephemeral keys replaced (``replace``: base58 -> ours)."""
    ix = web3js_clock_read_only(ix)
    return Instruction(
        Pubkey.from_string(ix["programId"]),
        bytes.fromhex(ix["data"]),
        [
            AccountMeta(replace.get(k, Pubkey.from_string(k)), signer, writable)
            for k, signer, writable in ix["keys"]
        ],
    )


def same_message(
    prepared: types_pb2.PreparedTransaction, middle: list[Instruction], *, skip: int
) -> None:
    """The returned message equals the one compiled from our compute budget prefix,
    ``middle`` (the SDK's instructions) and our remaining instructions after ``skip``
    of ours (the fee transfer)."""
    message = VersionedTransaction.from_bytes(prepared.transaction).message
    ours = decompile(message)
    prefix = [ix for ix in ours if str(ix.program_id).startswith("ComputeBudget")]
    suffix = ours[len(prefix) + skip :]
    payer = Pubkey.from_string(prepared.required_signers[0])
    expected = MessageV0.try_compile(
        payer, [*prefix, *middle, *suffix], [], message.recent_blockhash
    )
    assert bytes(expected) == bytes(message)


async def sdk(pools: Pools, fn: str, **args: Any) -> dict[str, Any]:
    (answer,) = await oracle_async(
        [
            {
                "op": "sdk",
                "fn": fn,
                "rpc": pools.localnet.url,
                "args": {k: str(v) for k, v in args.items()},
            }
        ]
    )
    assert "error" not in answer, answer
    return dict(answer)


async def pool_state(pools: Pools, name: str) -> Any:
    data = await pools.account_data(pools.pools[name].address)
    assert data is not None
    return decode_stake_pool(data)


# --- reads -------------------------------------------------------------------------------


async def test_list_stake_pools_reads_every_configured_pool_in_order(pools: Pools) -> None:
    listed = await pools.staking.ListStakePools(pb.ListStakePoolsRequest())
    assert [p.label for p in listed.stake_pools] == list(pools.pools)
    assert listed.total_size == len(pools.pools)
    first = listed.stake_pools[0]
    state = await pool_state(pools, "open")
    assert first.address == str(pools.pools["open"].address)
    assert first.program_id == str(STAKE_POOL_PROGRAM)
    assert (first.total_lamports, first.pool_token_supply) == (
        state.total_lamports,
        state.pool_token_supply,
    )
    assert first.lamports_per_pool_token == pytest.approx(21 / 20, rel=1e-9)
    assert (
        first.fees.sol_deposit_fee.numerator == 3 and first.fees.sol_deposit_fee.denominator == 1000
    )
    assert first.fees.sol_referral_fee_percent == 50
    assert first.up_to_date and first.sol_deposits_open and first.stake_deposits_open
    assert first.estimated_apy > 0
    assert not first.validators  # GetStakePool lists them, but the count is here too
    got = await pools.staking.GetStakePool(pb.GetStakePoolRequest(stake_pool=first.address))
    assert first.validator_count == len(got.stake_pool.validators) > 0
    assert [p.up_to_date for p in listed.stake_pools] == [True, True, True, False]
    restricted = listed.stake_pools[2]
    assert not restricted.sol_deposits_open and not restricted.sol_withdrawals_open

    page = await pools.staking.ListStakePools(pb.ListStakePoolsRequest(page_size=3))
    rest = await pools.staking.ListStakePools(
        pb.ListStakePoolsRequest(page_token=page.next_page_token)
    )
    assert [p.address for p in [*page.stake_pools, *rest.stake_pools]] == [
        p.address for p in listed.stake_pools
    ]
    assert rest.next_page_token == ""


async def test_get_stake_pool_agrees_with_the_sdk(pools: Pools) -> None:
    pool = pools.pools["open"]
    got = (
        await pools.staking.GetStakePool(pb.GetStakePoolRequest(stake_pool=str(pool.address)))
    ).stake_pool
    info = await sdk(pools, "stakePoolInfo", stakePool=pool.address)
    assert got.withdraw_authority == info["poolWithdrawAuthority"]
    assert got.manager == info["manager"]
    assert got.pool_mint == info["poolMint"] and got.reserve_stake == info["reserveStake"]
    assert got.validator_list == info["validatorListStorageAccount"]
    assert str(got.total_lamports) == info["totalLamports"]
    assert str(got.pool_token_supply) == info["poolTokenSupply"]
    assert str(got.last_update_epoch) == info["lastUpdateEpoch"]
    details = info["details"]
    assert got.reserve_lamports == details["reserveStakeLamports"]
    assert (
        got.sol_withdrawable_lamports
        == details["reserveStakeLamports"] - details["minimumReserveStakeBalance"]
    )
    assert got.up_to_date is (not details["updateRequired"])
    assert got.validator_count == details["currentNumberOfValidators"] == len(got.validators)
    theirs = {a["voteAccountAddress"]: a for a in details["stakeAccounts"]}
    for validator in got.validators:
        expected = theirs[validator.vote_account]
        assert validator.stake_account == expected["stakeAccountAddress"]
        assert str(validator.active_stake_lamports) == expected["validatorActiveStakeLamports"]
        assert validator.status == pb.STAKE_POOL_VALIDATOR_STATUS_ACTIVE
    assert got.fees.sol_withdrawal_fee.numerator == int(info["solWithdrawalFee"]["numerator"])


# --- deposits ----------------------------------------------------------------------------


async def test_deposit_sol_is_the_sdks_deposit_with_the_wallet_funding_it(pools: Pools) -> None:
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    amount = 3 * SOL
    built = await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pool.address),
            amount_lamports=amount,
            options=NO_PRIORITY,
        )
    )
    prepared = built.transaction
    assert list(prepared.required_signers) == [str(wallet.pubkey())]
    assert built.method == pb.LIQUID_STAKE_METHOD_DEPOSIT_SOL and built.label == "open"
    ata = associated_token_address(owner=wallet.pubkey(), mint=pool.pool_mint)
    assert built.pool_token_account == str(ata) and built.creates_pool_token_account

    # The program's arithmetic: tokens = amount * supply / total, fee rounded up, half
    # of it (sol_referral_fee 50 %) back to the wallet as referrer.
    state = await pool_state(pools, "open")
    minted = amount * state.pool_token_supply // state.total_lamports
    fee = -(-minted * 3 // 1000)
    assert built.expected_pool_tokens == minted - fee + fee * 50 // 100
    assert built.referral_pool_tokens == fee * 50 // 100
    assert built.deposit_fee_pool_tokens == fee - fee * 50 // 100

    fees = prepared.fees
    service_fee = amount * FEE_BPS // 10_000
    assert fees.service_fee_lamports == service_fee
    assert fees.rent_exempt_reserve_lamports == 2_039_280  # the new token account
    assert fees.total_debit_lamports == amount + service_fee + 2_039_280 + fees.network_fee_lamports
    types = [i.type for i in prepared.instructions]
    assert types == ["SetComputeUnitLimit", "CreateIdempotent", "DepositSol", "Transfer"]
    assert prepared.instructions[2].program_name == "StakePool"

    theirs = await sdk(
        pools,
        "depositSol",
        **{"stakePool": pool.address, "from": wallet.pubkey(), "lamports": amount},
    )
    transfer, create, deposit = theirs["instructions"]
    (ephemeral,) = theirs["signers"]
    assert transfer["programId"] == str(SYSTEM_PROGRAM)  # to the SDK's ephemeral funding key
    same_message(
        prepared, [from_sdk(create, {}), from_sdk(deposit, {ephemeral: wallet.pubkey()})], skip=2
    )


async def test_a_deposit_whose_service_fee_rounds_to_nothing_names_no_recipient(
    pools: Pools,
) -> None:
    """FeeBreakdown.fee_recipient is empty when no fee is charged, though the rate is
    not 0: 25 bps of 399 lamports is 0 (floor), so no transfer and no recipient."""
    wallet = await pools.wallet()
    amount = 10_000 // FEE_BPS - 1
    built = await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pools.pools["open"].address),
            amount_lamports=amount,
            options=NO_PRIORITY,
        )
    )
    fees = built.transaction.fees
    assert (fees.service_fee_bps, fees.service_fee_lamports) == (FEE_BPS, 0)
    assert fees.fee_recipient == ""
    assert "Transfer" not in [i.type for i in built.transaction.instructions]


async def test_deposit_stake_is_the_sdks_deposit(pools: Pools) -> None:
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    voter = pool.vote_accounts[1]
    stake = await pools.active_stake_account(wallet.pubkey(), voter, 4 * SOL)
    built = await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pool.address),
            stake_account=str(stake),
            options=NO_PRIORITY,
        )
    )
    assert built.method == pb.LIQUID_STAKE_METHOD_DEPOSIT_STAKE
    assert built.vote_account == str(voter) and built.stake_account == str(stake)
    rent = 2_282_880
    assert built.deposit_lamports == 4 * SOL + rent
    state = await pool_state(pools, "open")
    minted = (4 * SOL + rent) * state.pool_token_supply // state.total_lamports
    from_stake = 4 * SOL * state.pool_token_supply // state.total_lamports
    fee = -(-from_stake * 1 // 1000) + -(-(minted - from_stake) * 3 // 1000)
    assert built.expected_pool_tokens == minted - fee + fee * 20 // 100
    assert [i.type for i in built.transaction.instructions] == [
        "SetComputeUnitLimit",
        "CreateIdempotent",
        "Authorize",
        "Authorize",
        "DepositStake",
        "Transfer",
    ]
    theirs = await sdk(
        pools,
        "depositStake",
        stakePool=pool.address,
        authorized=wallet.pubkey(),
        validatorVote=voter,
        depositStake=stake,
    )
    same_message(built.transaction, [from_sdk(ix, {}) for ix in theirs["instructions"]], skip=4)


async def _deposit_sol(
    pools: Pools, wallet: Keypair, lamports: int
) -> pb.BuildLiquidStakeTransactionResponse:
    """A DepositSol into the "open" pool, built for ``wallet``."""
    return await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pools.pools["open"].address),
            amount_lamports=lamports,
            options=NO_PRIORITY,
        )
    )


def _without_the_pool_program(built: pb.BuildLiquidStakeTransactionResponse) -> list[Instruction]:
    """The deposit's instructions the localnet can run (all but the pool program's)."""
    message = VersionedTransaction.from_bytes(built.transaction.transaction).message
    return [ix for ix in decompile(message) if ix.program_id != STAKE_POOL_PROGRAM]


async def test_the_localnet_runs_the_token_account_and_fee_parts_of_a_deposit(pools: Pools) -> None:
    """On chain: the deposit transaction without its DepositSol (the one instruction of
    a program the localnet lacks) creates the wallet's token account and pays the fee."""
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    built = await _deposit_sol(pools, wallet, 2 * SOL)
    runnable = _without_the_pool_program(built)
    fee_before = (await pools.rpc.get_balance(pools.fee_wallet.pubkey())).value
    blockhash = (await pools.rpc.get_latest_blockhash()).value.blockhash
    for _ in range(2):  # idempotent: the second run finds the account and succeeds
        tx = VersionedTransaction(
            MessageV0.try_compile(wallet.pubkey(), runnable, [], blockhash), [wallet]
        )
        await send(pools.rpc, tx)
        used = blockhash
        while blockhash == used:  # a new slot, so the second run is another transaction
            await asyncio.sleep(0.05)
            blockhash = (await pools.rpc.get_latest_blockhash()).value.blockhash
    data = await pools.account_data(Pubkey.from_string(built.pool_token_account))
    assert data is not None
    account = decode_token_account(data)
    assert (account.mint, account.owner, account.amount) == (pool.pool_mint, wallet.pubkey(), 0)
    fee_after = (await pools.rpc.get_balance(pools.fee_wallet.pubkey())).value
    assert fee_after - fee_before == 2 * built.transaction.fees.service_fee_lamports
    info = (await pools.rpc.get_account_info(Pubkey.from_string(built.pool_token_account))).value
    assert info is not None and info.owner == TOKEN_PROGRAM


async def test_lamports_already_at_the_token_account_address_lower_its_rent(
    pools: Pools,
) -> None:
    """Lamports sent to the address make no token account: it is still created, and
    the wallet pays only the rent missing, which the breakdown says."""
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    ata = associated_token_address(owner=wallet.pubkey(), mint=pool.pool_mint)
    prefunded = 1_000_000
    await pools.rpc.request_airdrop(ata, prefunded)
    await until(lambda: _has_lamports(pools, ata))
    built = await _deposit_sol(pools, wallet, 2 * SOL)
    fees = built.transaction.fees
    assert built.creates_pool_token_account
    assert fees.rent_exempt_reserve_lamports == 2_039_280 - prefunded
    # On chain, without the DepositSol the localnet cannot run: the wallet pays the
    # breakdown's total less the deposit itself.
    runnable = _without_the_pool_program(built)
    before = (await pools.rpc.get_balance(wallet.pubkey())).value
    blockhash = (await pools.rpc.get_latest_blockhash()).value.blockhash
    await send(
        pools.rpc,
        VersionedTransaction(
            MessageV0.try_compile(wallet.pubkey(), runnable, [], blockhash), [wallet]
        ),
    )
    after = (await pools.rpc.get_balance(wallet.pubkey())).value
    assert before - after == fees.total_debit_lamports - 2 * SOL


async def _has_lamports(pools: Pools, address: Pubkey) -> bool:
    return (await pools.rpc.get_balance(address)).value > 0


# --- withdrawals -------------------------------------------------------------------------


async def test_withdraw_sol_when_the_reserve_pays_is_the_sdks_withdrawal(pools: Pools) -> None:
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    await pools.on_chain(give_pool_tokens, pool, wallet.pubkey(), 10 * SOL)
    tokens = 1_500_000_000
    built = await pools.staking.BuildLiquidUnstakeTransaction(
        pb.BuildLiquidUnstakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pool.address),
            pool_tokens=tokens,
            options=NO_PRIORITY,
        )
    )
    assert built.method == pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_SOL
    assert "reserve" in built.method_reason
    state = await pool_state(pools, "open")
    fee = -(-tokens * 2 // 1000)
    assert built.withdrawal_fee_pool_tokens == fee
    assert (
        built.expected_lamports == (tokens - fee) * state.total_lamports // state.pool_token_supply
    )
    assert (
        built.transaction.fees.total_debit_lamports == built.transaction.fees.network_fee_lamports
    )
    assert built.stake_account == "" and "Nothing" in built.next_step
    theirs = await sdk(
        pools,
        "withdrawSol",
        stakePool=pool.address,
        owner=wallet.pubkey(),
        receiver=wallet.pubkey(),
        poolTokens=tokens,
    )
    approve, withdraw = theirs["instructions"]
    (ephemeral,) = theirs["signers"]
    assert approve["programId"] == str(TOKEN_PROGRAM)  # lets the SDK's ephemeral key burn
    same_message(built.transaction, [from_sdk(withdraw, {ephemeral: wallet.pubkey()})], skip=1)


async def test_withdraw_stake_into_a_seed_derived_account_is_the_sdks_withdrawal(
    pools: Pools,
) -> None:
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    await pools.on_chain(give_pool_tokens, pool, wallet.pubkey(), 10 * SOL)
    tokens = 2 * SOL
    request = pb.BuildLiquidUnstakeTransactionRequest(
        wallet=str(wallet.pubkey()),
        stake_pool=str(pool.address),
        pool_tokens=tokens,
        method=pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_STAKE,
        request_id="unstake-1",
        options=NO_PRIORITY,
    )
    built = await pools.staking.BuildLiquidUnstakeTransaction(request)
    again = await pools.staking.BuildLiquidUnstakeTransaction(request)
    assert (again.stake_account, again.seed) == (built.stake_account, built.seed)  # idempotent
    assert built.method == pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_STAKE
    new = Pubkey.from_string(built.stake_account)
    assert new == Pubkey.create_with_seed(
        wallet.pubkey(),
        built.seed,
        Pubkey.from_string("Stake11111111111111111111111111111111111111"),
    )
    assert built.vote_account in {str(v) for v in pool.vote_accounts}
    assert built.source_stake_account in {str(s) for s in pool.validator_stake_accounts}
    assert "Deactivate" in built.next_step
    assert built.transaction.fees.rent_exempt_reserve_lamports == 2_282_880
    types = [i.type for i in built.transaction.instructions]
    assert types == ["SetComputeUnitLimit", "CreateAccountWithSeed", "WithdrawStake"]

    theirs = await sdk(
        pools,
        "withdrawStake",
        stakePool=pool.address,
        owner=wallet.pubkey(),
        poolTokens=tokens,
        useReserve="",
        voteAccount=built.vote_account,
    )
    _approve, create, withdraw = theirs["instructions"]
    ephemeral, new_keypair = theirs["signers"]
    ours = decompile(VersionedTransaction.from_bytes(built.transaction.transaction).message)
    same_message(
        built.transaction,
        [ours[1], from_sdk(withdraw, {ephemeral: wallet.pubkey(), new_keypair: new})],
        skip=2,
    )
    # The SDK creates a keypair account; ours is seed-derived, with the same rent,
    # size and owner (the last 48 bytes of both System instructions).
    assert create["programId"] == str(SYSTEM_PROGRAM)
    assert bytes.fromhex(create["data"])[-48:] == bytes(ours[1].data)[-48:]


async def test_a_small_reserve_makes_the_withdrawal_a_stake_account(pools: Pools) -> None:
    pool = pools.pools["small-reserve"]
    wallet = await pools.wallet()
    await pools.on_chain(give_pool_tokens, pool, wallet.pubkey(), 10 * SOL)
    request = pb.BuildLiquidUnstakeTransactionRequest(
        wallet=str(wallet.pubkey()), stake_pool=str(pool.address), pool_tokens=5 * SOL
    )
    built = await pools.staking.BuildLiquidUnstakeTransaction(request)
    assert built.method == pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_STAKE
    assert "reserve can pay" in built.method_reason
    request.method = pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_SOL
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pools.staking.BuildLiquidUnstakeTransaction(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "STAKE_POOL_RESERVE_TOO_SMALL"
    assert int(info.metadata["available_lamports"]) == 2 * SOL


# --- errors ------------------------------------------------------------------------------


async def _error(call: Any) -> tuple[grpc.StatusCode, dict[str, Any]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), rich_details(caught.value)


async def test_errors_carry_reasons(pools: Pools) -> None:
    wallet = await pools.wallet()
    me = str(wallet.pubkey())
    open_pool = str(pools.pools["open"].address)
    stake = pools.staking

    code, details = await _error(stake.GetStakePool(pb.GetStakePoolRequest(stake_pool=me)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details["ErrorInfo"].reason == "STAKE_POOL_NOT_CONFIGURED"
    assert details["BadRequest"].field_violations[0].field == "stake_pool"

    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=str(pools.pools["outdated"].address), amount_lamports=SOL
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details["ErrorInfo"].reason == "STAKE_POOL_NOT_UPDATED"
    assert details["RetryInfo"].retry_delay.seconds > 0

    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=str(pools.pools["restricted"].address), amount_lamports=SOL
            )
        )
    )
    assert details["ErrorInfo"].reason == "STAKE_POOL_RESTRICTED"
    assert details["ErrorInfo"].metadata["restriction"] == "sol_deposit_authority"

    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=open_pool, amount_lamports=1
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details["ErrorInfo"].reason == "BELOW_MINIMUM_DEPOSIT"
    # The pool's rate as it is (total lamports over supply), not rounded up.
    state = await pool_state(pools, "open")
    rate = details["ErrorInfo"].metadata["lamports_per_pool_token"]
    assert float(rate) == pytest.approx(state.total_lamports / state.pool_token_supply)

    # An amount whose debit overflows names the amount sent, not the sum.
    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=open_pool, amount_lamports=2**64 - 1
            )
        )
    )
    assert (code, details["ErrorInfo"].reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_AMOUNT",
    )
    assert details["ErrorInfo"].metadata["value"] == str(2**64 - 1)

    # Pool tokens are counted in the mint's units, not lamports.
    code, details = await _error(
        stake.BuildLiquidUnstakeTransaction(
            pb.BuildLiquidUnstakeTransactionRequest(wallet=me, stake_pool=open_pool, pool_tokens=0)
        )
    )
    violation = details["BadRequest"].field_violations[0]
    assert (violation.field, violation.reason) == ("pool_tokens", "INVALID_AMOUNT")
    assert "lamports" not in violation.description
    assert "lamports" not in details["ErrorInfo"].metadata["hint"]

    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=open_pool, amount_lamports=SOL, min_pool_tokens=SOL
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details["ErrorInfo"].reason == "SLIPPAGE_EXCEEDED"

    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(wallet=me, stake_pool=open_pool)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details["BadRequest"].field_violations[0].field == "amount_lamports"

    code, details = await _error(
        stake.BuildLiquidUnstakeTransaction(
            pb.BuildLiquidUnstakeTransactionRequest(
                wallet=me, stake_pool=open_pool, pool_tokens=SOL
            )
        )
    )
    assert details["ErrorInfo"].reason == "INSUFFICIENT_POOL_TOKENS"

    activating = await pools.active_stake_account(wallet.pubkey(), Pubkey.from_string(me), SOL)
    code, details = await _error(
        stake.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=me, stake_pool=open_pool, stake_account=str(activating)
            )
        )
    )
    assert details["ErrorInfo"].reason == "STAKE_DEPOSIT_REJECTED"
    assert details["ErrorInfo"].metadata["cause"] == "validator_not_in_pool"


async def test_slippage_bounds_go_into_the_instructions(pools: Pools) -> None:
    pool = pools.pools["open"]
    wallet = await pools.wallet()
    probe = await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()), stake_pool=str(pool.address), amount_lamports=SOL
        )
    )
    minimum = probe.expected_pool_tokens - probe.referral_pool_tokens
    bounded = await pools.staking.BuildLiquidStakeTransaction(
        pb.BuildLiquidStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            stake_pool=str(pool.address),
            amount_lamports=SOL,
            min_pool_tokens=minimum,
        )
    )
    deposit = next(i for i in bounded.transaction.instructions if i.program_name == "StakePool")
    assert deposit.type == "DepositSolWithSlippage"
    assert deposit.data == bytes([25]) + SOL.to_bytes(8, "little") + minimum.to_bytes(8, "little")
    assert bounded.min_pool_tokens == minimum


async def test_simulation_reports_that_the_program_is_missing(pools: Pools) -> None:
    """With simulate, a cluster without the stake-pool program (this localnet) answers a
    precise SIMULATION_FAILED, never INTERNAL."""
    wallet = await pools.wallet()
    options = types_pb2.TransactionOptions(simulate=True)
    code, details = await _error(
        pools.staking.BuildLiquidStakeTransaction(
            pb.BuildLiquidStakeTransactionRequest(
                wallet=str(wallet.pubkey()),
                stake_pool=str(pools.pools["open"].address),
                amount_lamports=SOL,
                options=options,
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details["ErrorInfo"].reason == "SIMULATION_FAILED"


async def test_network_info_still_answers(pools: Pools) -> None:
    info = await pools.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.epoch >= 1
