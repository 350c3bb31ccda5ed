"""The chain shell of BuildNonceAccountTransaction: the wallet's managed durable nonce
account, created (funded by the wallet) or closed back into it.

Reads the account, the wallet's balance and the rent-exempt minimum of a nonce
account (one batch of calls), then plans with the core and simulates when asked,
with the steps every build shares (options, priority fee, simulation) of
:class:`StakingOperations`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from solders.pubkey import Pubkey

from service.core._validate import parse_address
from service.core.errors import FieldErrors, InvalidArgumentError
from service.core.plans import (
    NonceAccountContext,
    NonceAccountRequest,
    PreparedNonceAccountTransaction,
    RecentBlockhash,
    TransactionOptions,
    build_nonce_account_transaction,
    check_memo,
    managed_nonce_address,
)
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.core.programs import NONCE_ACCOUNT_SIZE
from service.core.seeds import check_request_id

from ._context import ChainContext
from ._operations import BuildOptions, Simulation, StakingOperations, _collect
from ._rpc import ChainUnavailable, RpcError, SolanaRpc


@dataclass(frozen=True, kw_only=True)
class NonceAccountParams:
    """A BuildNonceAccountTransaction request as plain values."""

    wallet: str
    close: bool = False
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class BuiltNonceAccount:
    plan: PreparedNonceAccountTransaction
    simulation: Simulation | None


class NonceAccounts:
    """Builds the transactions that create and close managed nonce accounts."""

    def __init__(
        self,
        *,
        operations: StakingOperations,
        rpc: SolanaRpc,
        context: ChainContext,
        rpc_timeout: float = 5.0,
    ) -> None:
        self._ops = operations
        self._rpc = rpc
        self._context = context
        self._timeout = rpc_timeout

    async def build(
        self, params: NonceAccountParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltNonceAccount:
        """Plan the creation (or closing) of the wallet's managed nonce account.

        Raises:
            DomainError: invalid fields (a durable nonce asked for), the account
                existing already (create) or missing (close), insufficient funds,
                the key's policy, chain unavailable.
        """
        snapshot = self._context.snapshot()
        options = params.options

        def no_nonce() -> None:
            if options.nonce_account or options.nonce_authority:
                raise InvalidArgumentError(
                    "the managed nonce account is created and closed with a recent "
                    "blockhash: leave options.durable_nonce unset",
                    field="options.durable_nonce",
                )

        wallet, *_ = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: check_request_id(params.request_id),
            lambda: check_memo(options.memo),
            FieldErrors(options.invalid).raise_any,
            no_nonce,
        )
        assert isinstance(wallet, Pubkey)
        policy.check(wallet=str(wallet), amount_lamports=0, vote_account=None)
        address = managed_nonce_address(wallet)
        lifetime = await self._ops.lifetime(snapshot, None, wallet)
        assert isinstance(lifetime, RecentBlockhash)  # no nonce account: a blockhash
        accounts, rent = await asyncio.gather(
            self._ask(
                "getMultipleAccounts",
                [
                    [str(address), str(wallet)],
                    {
                        "encoding": "base64",
                        "commitment": "confirmed",
                        "dataSlice": {"offset": 0, "length": 0},
                    },
                ],
            ),
            self._ask("getMinimumBalanceForRentExemption", [NONCE_ACCOUNT_SIZE]),
        )
        try:
            nonce_value, wallet_value = accounts["value"]
            context = NonceAccountContext(
                lifetime=lifetime,
                rent_exempt_lamports=int(rent),
                account_lamports=None if nonce_value is None else int(nonce_value["lamports"]),
                wallet_balance_lamports=0
                if wallet_value is None
                else int(wallet_value["lamports"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ChainUnavailable("getMultipleAccounts: malformed answer") from None
        template = NonceAccountRequest(wallet=wallet, close=params.close)

        def build(tx_options: TransactionOptions) -> PreparedNonceAccountTransaction:
            return build_nonce_account_transaction(replace(template, options=tx_options), context)

        plan, simulation = await self._ops.prepare(
            build,
            lambda p: p.prepared,
            self._ops.transaction_options(options, policy),
            options,
        )
        return BuiltNonceAccount(plan=plan, simulation=simulation)

    async def _ask(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._rpc.call(method, params, timeout=self._timeout)
        except RpcError as exc:
            raise ChainUnavailable(f"{method}: {exc.message}") from None
