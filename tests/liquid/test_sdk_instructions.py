"""Every instruction liquid staking builds, byte for byte against the builders of the
official JavaScript SDKs run on the same inputs: program id, account metas with their
signer and writable flags, and data.

- DepositSol, DepositStake, WithdrawSol, WithdrawStake: @solana/spl-stake-pool's
  ``StakePoolInstruction`` builders.
- Their ``*WithSlippage`` twins (used when the caller sets a bound): the SDK has no
  builder for them. Their accounts are checked against the SDK's builder of the plain
  instruction (the program takes the same accounts), their data against the layout of
  the program's ``instruction.rs`` (variant index, then the u64 fields).
- The associated token account: @solana/spl-token's
  ``createAssociatedTokenAccountIdempotentInstruction`` and address derivation.
- Stake Authorize and CreateAccountWithSeed: @solana/web3.js. web3.js marks the Clock
  sysvar of Authorize writable, where the stake program's own builder
  (``solana_stake_interface::instruction::authorize``) has it read-only, as ours does (the
  runtime never write-locks a sysvar anyway): that one flag is the only difference.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from solders.instruction import Instruction

from service.core.encoders import StakeAuthorize, stake_authorize, system_create_account_with_seed
from service.core.programs import (
    STAKE_POOL_PROGRAM,
    STAKE_PROGRAM,
    SYSVAR_CLOCK,
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
)
from service.core.stake_pool_instructions import (
    deposit_sol,
    deposit_stake,
    withdraw_sol,
    withdraw_stake,
)
from service.core.tokens import associated_token_address, create_associated_token_account_idempotent
from tests.liquid._cases import key
from tests.liquid._sdk import as_json, oracle

CASES = 40
# The SDK passes amounts as JavaScript numbers: exact up to 2**53 - 1.
MAX_SAFE = 2**53 - 1


def _amount(rng: random.Random) -> int:
    return rng.choice([1, MAX_SAFE, rng.randrange(1, 10**10), rng.randrange(1, MAX_SAFE)])


def _deposit_sol(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [
        "stakePool",
        "withdrawAuthority",
        "reserveStake",
        "fundingAccount",
        "destinationPoolAccount",
        "managerFeeAccount",
        "referralPoolAccount",
        "poolMint",
    ]
    keys = {n: key(rng) for n in names}
    lamports = _amount(rng)
    ours = dict(
        program_id=STAKE_POOL_PROGRAM,
        stake_pool=keys["stakePool"],
        withdraw_authority=keys["withdrawAuthority"],
        reserve_stake=keys["reserveStake"],
        funding_account=keys["fundingAccount"],
        destination_pool_account=keys["destinationPoolAccount"],
        manager_fee_account=keys["managerFeeAccount"],
        referral_pool_account=keys["referralPoolAccount"],
        pool_mint=keys["poolMint"],
        lamports=lamports,
    )
    return ours, {**{k: str(v) for k, v in keys.items()}, "lamports": str(lamports)}


def _deposit_stake(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    pairs = [
        ("stake_pool", "stakePool"),
        ("validator_list", "validatorList"),
        ("deposit_authority", "depositAuthority"),
        ("withdraw_authority", "withdrawAuthority"),
        ("deposit_stake_account", "depositStake"),
        ("validator_stake_account", "validatorStake"),
        ("reserve_stake", "reserveStake"),
        ("destination_pool_account", "destinationPoolAccount"),
        ("manager_fee_account", "managerFeeAccount"),
        ("referral_pool_account", "referralPoolAccount"),
        ("pool_mint", "poolMint"),
    ]
    keys = {ours: key(rng) for ours, _ in pairs}
    return (
        {"program_id": STAKE_POOL_PROGRAM, **keys},
        {theirs: str(keys[ours]) for ours, theirs in pairs},
    )


def _withdraw_sol(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    pairs = [
        ("stake_pool", "stakePool"),
        ("withdraw_authority", "withdrawAuthority"),
        ("user_transfer_authority", "sourceTransferAuthority"),
        ("source_pool_account", "sourcePoolAccount"),
        ("reserve_stake", "reserveStake"),
        ("destination", "destinationSystemAccount"),
        ("manager_fee_account", "managerFeeAccount"),
        ("pool_mint", "poolMint"),
    ]
    keys = {ours: key(rng) for ours, _ in pairs}
    tokens = _amount(rng)
    return (
        {"program_id": STAKE_POOL_PROGRAM, **keys, "pool_tokens": tokens},
        {**{theirs: str(keys[ours]) for ours, theirs in pairs}, "poolTokens": str(tokens)},
    )


def _withdraw_stake(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    pairs = [
        ("stake_pool", "stakePool"),
        ("validator_list", "validatorList"),
        ("withdraw_authority", "withdrawAuthority"),
        ("source_stake_account", "validatorStake"),
        ("destination_stake_account", "destinationStake"),
        ("destination_stake_authority", "destinationStakeAuthority"),
        ("user_transfer_authority", "sourceTransferAuthority"),
        ("source_pool_account", "sourcePoolAccount"),
        ("manager_fee_account", "managerFeeAccount"),
        ("pool_mint", "poolMint"),
    ]
    keys = {ours: key(rng) for ours, _ in pairs}
    tokens = _amount(rng)
    return (
        {"program_id": STAKE_POOL_PROGRAM, **keys, "pool_tokens": tokens},
        {**{theirs: str(keys[ours]) for ours, theirs in pairs}, "poolTokens": str(tokens)},
    )


Case = Callable[[random.Random], tuple[dict[str, Any], dict[str, Any]]]
BUILDERS: dict[str, tuple[Callable[..., Instruction], Case]] = {
    "depositSol": (deposit_sol, _deposit_sol),
    "depositStake": (deposit_stake, _deposit_stake),
    "withdrawSol": (withdraw_sol, _withdraw_sol),
    "withdrawStake": (withdraw_stake, _withdraw_stake),
}


def test_stake_pool_instructions_match_the_sdk_builders() -> None:
    rng = random.Random(2222)
    ours, requests = [], []
    for name, (build, case) in BUILDERS.items():
        for _ in range(CASES):
            kwargs, params = case(rng)
            ours.append(as_json(build(**kwargs)))
            requests.append({"op": "builder", "name": name, "params": params})
    answers = oracle(requests)
    for mine, theirs, request in zip(ours, answers, requests, strict=True):
        assert mine == theirs, request["name"]


# The variant indices of the program's StakePoolInstruction enum (instruction.rs).
SLIPPAGE_TAGS = {"depositStake": 23, "withdrawStake": 24, "depositSol": 25, "withdrawSol": 26}
BOUND = {
    "depositSol": "minimum_pool_tokens_out",
    "depositStake": "minimum_pool_tokens_out",
    "withdrawSol": "minimum_lamports_out",
    "withdrawStake": "minimum_lamports_out",
}


def test_slippage_variants_take_the_plain_accounts_and_the_program_layout() -> None:
    rng = random.Random(2323)
    cases: list[tuple[str, dict[str, Any], int, Instruction, dict[str, Any]]] = []
    for name, (build, case) in BUILDERS.items():
        for _ in range(CASES // 4):
            kwargs, params = case(rng)
            bound = rng.choice([0, 1, 2**64 - 1, rng.randrange(2**64)])
            built = build(**kwargs, **{BOUND[name]: bound})
            cases.append((name, kwargs, bound, built, params))
    answers = oracle([{"op": "builder", "name": c[0], "params": c[4]} for c in cases])
    for (name, kwargs, bound, built, _), plain in zip(cases, answers, strict=True):
        mine = as_json(built)
        assert mine["programId"] == plain["programId"]
        assert mine["keys"] == plain["keys"], name
        amount = kwargs.get("lamports", kwargs.get("pool_tokens"))
        fields = () if amount is None else (amount,)
        expected = bytes([SLIPPAGE_TAGS[name]]) + struct.pack(
            f"<{len(fields) + 1}Q", *fields, bound
        )
        assert bytes.fromhex(mine["data"]) == expected, name


def test_token_account_creation_matches_spl_token() -> None:
    rng = random.Random(2424)
    cases = [
        (key(rng), key(rng), key(rng), rng.choice([TOKEN_PROGRAM, TOKEN_2022_PROGRAM]))
        for _ in range(CASES)
    ]
    # A wallet pays for its own account, the common case.
    cases.append((cases[0][1], cases[0][1], cases[0][2], TOKEN_PROGRAM))
    answers = oracle(
        [
            {"op": "ata", "payer": str(p), "owner": str(o), "mint": str(m), "tokenProgram": str(t)}
            for p, o, m, t in cases
        ]
    )
    for (payer, owner, mint, program), answer in zip(cases, answers, strict=True):
        assert (
            str(associated_token_address(owner=owner, mint=mint, token_program=program))
            == answer["address"]
        )
        built = create_associated_token_account_idempotent(
            payer=payer, owner=owner, mint=mint, token_program=program
        )
        assert as_json(built) == answer["instruction"]


def test_authorize_and_create_with_seed_match_web3js() -> None:
    rng = random.Random(2525)
    ours, requests = [], []
    for _ in range(CASES):
        stake, authority, new = key(rng), key(rng), key(rng)
        role = rng.choice([StakeAuthorize.STAKER, StakeAuthorize.WITHDRAWER])
        ours.append(
            as_json(
                stake_authorize(
                    stake_account=stake, authority=authority, new_authority=new, role=role
                )
            )
        )
        requests.append(
            {
                "op": "authorize",
                "stakeAccount": str(stake),
                "authority": str(authority),
                "newAuthority": str(new),
                "role": role.name.lower(),
            }
        )
        wallet, new_account = key(rng), key(rng)
        seed = "stake:" + rng.randbytes(8).hex()
        lamports = _amount(rng)
        ours.append(
            as_json(
                system_create_account_with_seed(
                    payer=wallet,
                    new_account=new_account,
                    base=wallet,
                    seed=seed,
                    lamports=lamports,
                    space=200,
                    owner=STAKE_PROGRAM,
                )
            )
        )
        requests.append(
            {
                "op": "createWithSeed",
                "from": str(wallet),
                "newAccount": str(new_account),
                "base": str(wallet),
                "seed": seed,
                "lamports": str(lamports),
                "space": "200",
                "owner": str(STAKE_PROGRAM),
            }
        )
    for mine, theirs in zip(ours, oracle(requests), strict=True):
        assert mine == web3js_clock_read_only(theirs)


def web3js_clock_read_only(ix: dict[str, Any]) -> dict[str, Any]:
    """A web3.js Stake instruction with its Clock sysvar read-only (see the module doc)."""
    if ix["programId"] != str(STAKE_PROGRAM):
        return ix
    keys = [[k, s, w and k != str(SYSVAR_CLOCK)] for k, s, w in ix["keys"]]
    return {**ix, "keys": keys}
