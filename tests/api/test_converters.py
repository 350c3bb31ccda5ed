"""Proto <-> domain conversions, without a server."""

from __future__ import annotations

from agentstaking.v1 import staking_pb2, types_pb2
from solders.hash import Hash
from solders.keypair import Keypair

from service.api._converters import options_to_domain, prepared_to_proto, stake_request_to_domain
from service.core.errors import InvalidArgumentError
from service.core.fees import ServiceFee
from service.core.plans import (
    RecentBlockhash,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    build_stake_transaction,
    managed_nonce_address,
)
from service.core.seeds import SeedPurpose, seed_from_request_id


def test_options_defaults() -> None:
    options = options_to_domain(types_pb2.TransactionOptions())
    assert options.version is TransactionVersion.V0
    assert options.compute_unit_price_micro_lamports is None
    assert options.priority_level == "medium"
    assert not options.simulate


def test_explicit_price_beats_level_and_zero_is_explicit() -> None:
    options = options_to_domain(types_pb2.TransactionOptions(compute_unit_price_micro_lamports=0))
    assert options.compute_unit_price_micro_lamports == 0
    level = options_to_domain(
        types_pb2.TransactionOptions(priority_level=types_pb2.PRIORITY_LEVEL_VERY_HIGH)
    )
    assert level.priority_level == "very_high" and level.compute_unit_price_micro_lamports is None


def test_unknown_enum_values_are_field_errors() -> None:
    # Carried to the build, which names them with every other invalid field.
    options = options_to_domain(types_pb2.TransactionOptions(version=99))  # type: ignore[arg-type]
    (error,) = options.invalid
    assert isinstance(error, InvalidArgumentError) and error.field == "options.version"


def test_stake_request_lockup_presence() -> None:
    plain = stake_request_to_domain(staking_pb2.BuildStakeTransactionRequest(wallet="w"))
    assert plain.lockup is None
    locked = stake_request_to_domain(
        staking_pb2.BuildStakeTransactionRequest(
            wallet="w", lockup=types_pb2.Lockup(unix_timestamp=5, epoch=7, custodian="c")
        )
    )
    assert locked.lockup == (5, 7, "c")


def test_prepared_to_proto_keeps_every_instruction() -> None:
    wallet, vote, fee = Keypair().pubkey(), Keypair().pubkey(), Keypair().pubkey()
    plan = build_stake_transaction(
        StakeRequest(
            wallet=wallet,
            vote_account=vote,
            amount_lamports=2_000_000_000,
            seed=seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id="a"),
            service_fee=ServiceFee(bps=10, recipient=fee),
            options=TransactionOptions(memo="hi"),
        ),
        StakeContext(
            lifetime=RecentBlockhash(blockhash=Hash.new_unique(), last_valid_block_height=300),
            rent_exempt_reserve_lamports=2_282_880,
            minimum_delegation_lamports=1_000_000_000,
        ),
    )
    proto = prepared_to_proto(plan.prepared)
    assert proto.transaction == plan.prepared.transaction
    assert [i.type for i in proto.instructions] == [i.type for i in plan.prepared.instructions]
    assert proto.instructions[-1].data == b"hi"
    assert proto.fees.total_debit_lamports == plan.prepared.fees.total_debit_lamports
    assert not proto.HasField("simulation")
    # The amounts the instructions state, and only theirs.
    amounts = [(i.type, i.lamports if i.HasField("lamports") else None) for i in proto.instructions]
    assert amounts == [
        ("SetComputeUnitLimit", None),
        ("CreateAccountWithSeed", 2_000_000_000 + 2_282_880),
        ("Initialize", None),
        ("DelegateStake", None),
        ("Transfer", 2_000_000),
        ("Memo", None),
    ]


def test_managed_nonce_names_the_wallets_account() -> None:
    wallet = Keypair().pubkey()
    managed = types_pb2.TransactionOptions(durable_nonce=types_pb2.DurableNonce(managed=True))
    options = options_to_domain(managed, wallet=str(wallet))
    assert options.nonce_account == str(managed_nonce_address(wallet))
    assert options.nonce_authority == ""
    both = types_pb2.TransactionOptions(
        durable_nonce=types_pb2.DurableNonce(managed=True, nonce_account=str(wallet))
    )
    (error,) = options_to_domain(both, wallet=str(wallet)).invalid
    assert isinstance(error, InvalidArgumentError)
    assert error.field == "options.durable_nonce.managed"
    # A wallet that does not parse is the build's to name (once), not the options'.
    unparsed = options_to_domain(managed, wallet="not-a-wallet")
    assert unparsed.invalid == () and unparsed.nonce_account == ""
