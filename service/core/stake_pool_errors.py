"""Domain errors of liquid staking (SPL stake pools); mapped to gRPC statuses in
``service/api/_errors.py`` like every other domain error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from service.core.errors import DomainError, ErrorKind

# RetryInfo delay for a pool not yet updated this epoch: the update (a permissionless
# crank) normally runs within minutes of the epoch start.
STAKE_POOL_UPDATE_RETRY_SECONDS: Final = 60.0


class StakePoolNotConfiguredError(DomainError):
    """The request names a pool the operator does not offer."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "STAKE_POOL_NOT_CONFIGURED"
    default_hint = "Pick a pool from ListStakePools."

    def __init__(self, *, stake_pool: str, field: str = "stake_pool") -> None:
        super().__init__(
            f"stake pool {stake_pool} is not one this service offers",
            field=field,
            metadata={"stake_pool": stake_pool},
        )


class StakePoolOutOfDateError(DomainError):
    """The pool has not been updated for the current epoch: the program refuses
    deposits and withdrawals until someone runs its update."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_POOL_NOT_UPDATED"
    default_hint = (
        "Retry after the delay in RetryInfo: the pool is updated (by anyone) at the start "
        "of each epoch, and takes no deposits or withdrawals before."
    )
    retry_after = STAKE_POOL_UPDATE_RETRY_SECONDS

    def __init__(self, *, stake_pool: str, last_update_epoch: int, epoch: int) -> None:
        super().__init__(
            f"stake pool {stake_pool} was last updated in epoch {last_update_epoch}; it "
            f"must be updated for epoch {epoch} before it takes deposits or withdrawals",
            metadata={
                "stake_pool": stake_pool,
                "last_update_epoch": last_update_epoch,
                "epoch": epoch,
            },
        )


class StakePoolRestrictedError(DomainError):
    """The pool's manager requires an authority's signature for this operation
    (``restriction``: ``sol_deposit_authority``, ``stake_deposit_authority`` or
    ``sol_withdraw_authority``), so the wallet alone cannot do it."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_POOL_RESTRICTED"
    default_hint = "Use another way in or out of the pool (see the error message), or another pool."

    def __init__(self, message: str, *, stake_pool: str, restriction: str, authority: str) -> None:
        super().__init__(
            message,
            metadata={"stake_pool": stake_pool, "restriction": restriction, "authority": authority},
        )


class ReserveTooSmallError(DomainError):
    """WithdrawSol asks for more than the pool's reserve can pay now."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_POOL_RESERVE_TOO_SMALL"
    default_hint = (
        "Withdraw fewer pool tokens, or leave method unset to receive a stake account "
        "(WithdrawStake) instead."
    )

    def __init__(self, *, stake_pool: str, lamports: int, available_lamports: int) -> None:
        super().__init__(
            f"the reserve of stake pool {stake_pool} can pay at most {available_lamports} "
            f"lamports now; the withdrawal is worth {lamports}",
            metadata={
                "stake_pool": stake_pool,
                "lamports": lamports,
                "available_lamports": available_lamports,
            },
        )


class StakeWithdrawalUnavailableError(DomainError):
    """No single stake account of the pool can pay this WithdrawStake now."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_POOL_WITHDRAWAL_TOO_LARGE"
    default_hint = "Withdraw at most max_lamports' worth of pool tokens per transaction."

    def __init__(self, message: str, *, stake_pool: str, lamports: int, max_lamports: int) -> None:
        super().__init__(
            message,
            metadata={"stake_pool": stake_pool, "lamports": lamports, "max_lamports": max_lamports},
        )


class SlippageExceededError(DomainError):
    """At the pool's current rate the transaction would pay less than the caller's bound."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "SLIPPAGE_EXCEEDED"
    default_hint = "Lower the bound, or retry: the pool's rate changes at epoch boundaries."

    def __init__(self, message: str, *, field: str, expected: int, minimum: int) -> None:
        super().__init__(message, field=field, metadata={"expected": expected, "minimum": minimum})


class BelowMinimumError(DomainError):
    """The amount is too small for the pool: the deposit would mint no pool token
    (BELOW_MINIMUM_DEPOSIT) or the withdrawal would pay nothing
    (BELOW_MINIMUM_WITHDRAWAL)."""

    kind = ErrorKind.INVALID_ARGUMENT
    default_reason = "BELOW_MINIMUM_DEPOSIT"
    default_hint = "Raise the amount."

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        field: str,
        metadata: Mapping[str, str | int] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, field=field, metadata=metadata)


class InsufficientPoolTokensError(DomainError):
    """The wallet holds fewer pool tokens than it asks to withdraw."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INSUFFICIENT_POOL_TOKENS"
    default_hint = "Withdraw at most the wallet's pool token balance."

    def __init__(self, *, token_account: str, requested: int, available: int) -> None:
        super().__init__(
            f"{token_account} holds {available} pool tokens; {requested} were asked for",
            field="pool_tokens",
            metadata={
                "token_account": token_account,
                "requested_pool_tokens": requested,
                "available_pool_tokens": available,
            },
        )


class StakeDepositRejectedError(DomainError):
    """The pool would not take this stake account (``cause``: ``validator_not_in_pool``,
    ``preferred_validator``, ``not_active``, ``lockup`` or ``stake_authority``)."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_DEPOSIT_REJECTED"
    default_hint = (
        "Deposit a fully active stake account of the wallet (stake and withdraw authority "
        "the wallet, no lockup) delegated to one of the pool's validators."
    )

    def __init__(self, message: str, *, cause: str, metadata: Mapping[str, str | int]) -> None:
        super().__init__(message, field="stake_account", metadata={"cause": cause, **metadata})
