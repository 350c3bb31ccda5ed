"""A wallet with stake accounts on LiteSVM, and the plans' inputs read from it: the
harness the chain-execution tests of the plans share."""

from __future__ import annotations

from collections.abc import Sequence

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import SimulatedTransactionInfo

from service.core import (
    FetchedStakeAccount,
    Lifetime,
    Lockup,
    MergeContext,
    PreparedTransaction,
    RecentBlockhash,
    StakeContext,
    StakeRequest,
    StakeView,
    UnstakeContext,
    build_stake_transaction,
    decode_stake_account,
    stake_account_address,
    stake_split,
    system_create_account_with_seed,
    view_stake_account,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM
from tests.core._chain import Cluster, ok, sign_prepared

SOL = 10**9


class Harness:
    """A wallet with stake accounts on LiteSVM, and the plans' inputs read from it."""

    def __init__(self, svm: LiteSVM, vote: Pubkey, cluster: Cluster, wallet: Keypair) -> None:
        self.svm = svm
        self.vote = vote
        self.cluster = cluster
        self.wallet = wallet
        self.rent = svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
        self.stakes: list[Pubkey] = []
        self._seeds = 0

    def lifetime(self) -> RecentBlockhash:
        return RecentBlockhash(blockhash=self.svm.latest_blockhash(), last_valid_block_height=1)

    def seed(self, prefix: str = "stake") -> str:
        self._seeds += 1
        return f"{prefix}:t{self._seeds}"

    def stake(
        self,
        lamports: int,
        staker: Pubkey | None = None,
        *,
        vote: Pubkey | None = None,
        lockup: Lockup | None = None,
    ) -> Pubkey:
        plan = build_stake_transaction(
            StakeRequest(
                wallet=self.wallet.pubkey(),
                vote_account=vote or self.vote,
                amount_lamports=lamports,
                seed=self.seed(),
                stake_authority=staker,
                lockup=lockup,
            ),
            StakeContext(
                lifetime=self.lifetime(),
                rent_exempt_reserve_lamports=self.rent,
                minimum_delegation_lamports=SOL,
            ),
        )
        ok(self.svm.send_transaction(sign_prepared(plan.prepared, [self.wallet])))
        self.svm.expire_blockhash()
        self.stakes.append(plan.stake_account)
        return plan.stake_account

    def fetched(self, addresses: Sequence[Pubkey] | None = None) -> list[FetchedStakeAccount]:
        out = []
        for address in addresses if addresses is not None else self.stakes:
            account = self.svm.get_account(address)
            if account is None or not account.lamports:
                continue
            out.append(
                FetchedStakeAccount(
                    address=address,
                    lamports=account.lamports,
                    account=decode_stake_account(bytes(account.data)),
                )
            )
        return out

    def account(self, address: Pubkey) -> FetchedStakeAccount:
        """One stake account as it is now (it must exist)."""
        (found,) = self.fetched([address])
        return found

    def view(self, address: Pubkey) -> StakeView:
        """One stake account as ListStakeAccounts would show it now."""
        clock = self.svm.get_clock()
        return view_stake_account(
            self.account(address),
            wallet=self.wallet.pubkey(),
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            history=self.cluster.history,
            rent_exempt_reserve=self.rent,
        )

    def views(self) -> list[StakeView]:
        clock = self.svm.get_clock()
        return [
            view_stake_account(
                f,
                wallet=self.wallet.pubkey(),
                epoch=clock.epoch,
                unix_timestamp=clock.unix_timestamp,
                history=self.cluster.history,
                rent_exempt_reserve=self.rent,
            )
            for f in self.fetched()
        ]

    def unstake_context(self, lifetime: Lifetime | None = None) -> UnstakeContext:
        return UnstakeContext(
            lifetime=lifetime or self.lifetime(),
            accounts=self.fetched(),
            epoch=self.svm.get_clock().epoch,
            history=self.cluster.history,
            rent_exempt_reserve_lamports=self.rent,
            minimum_delegation_lamports=SOL,
        )

    def merge_context(self, lifetime: Lifetime | None = None) -> MergeContext:
        clock = self.svm.get_clock()
        return MergeContext(
            lifetime=lifetime or self.lifetime(),
            accounts=self.fetched(),
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            history=self.cluster.history,
        )

    def program_accepts(self, instructions: Sequence[Instruction], *cosigners: Keypair) -> bool:
        """The stake program's own verdict on raw instructions now (simulated: nothing
        changes), signed by the wallet and ``cosigners``."""
        message = MessageV0.try_compile(
            self.wallet.pubkey(), instructions, [], self.svm.latest_blockhash()
        )
        tx = VersionedTransaction(message, [self.wallet, *cosigners])
        return isinstance(self.svm.simulate_transaction(tx), SimulatedTransactionInfo)

    def raw_split(self, source: Pubkey, lamports: int) -> list[Instruction]:
        """A split into a fresh seed-derived account pre-funded to rent exemption,
        built by hand (the wallet as stake authority)."""
        seed = self.seed("raw")
        wallet = self.wallet.pubkey()
        destination = stake_account_address(base=wallet, seed=seed)
        return [
            system_create_account_with_seed(
                payer=wallet,
                new_account=destination,
                base=wallet,
                seed=seed,
                lamports=self.rent,
                space=STAKE_ACCOUNT_SIZE,
                owner=STAKE_PROGRAM,
            ),
            stake_split(
                stake_account=source, destination=destination, staker=wallet, lamports=lamports
            ),
        ]

    def run(self, prepared: PreparedTransaction, *signers: Keypair) -> int:
        """Execute; returns the compute units consumed."""
        meta = ok(self.svm.send_transaction(sign_prepared(prepared, [self.wallet, *signers])))
        self.svm.expire_blockhash()
        return meta.compute_units_consumed()
