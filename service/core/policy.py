"""What one caller may build: the limits of its API key, checked before any plan."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.errors import DomainError, ErrorKind


class PolicyViolationError(DomainError):
    """The request is valid but the caller's key does not allow it."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "POLICY_VIOLATION"
    default_hint = "Ask the operator to widen the key's policy, or change the request."


@dataclass(frozen=True, kw_only=True)
class CallerPolicy:
    """Limits that apply to one caller's builds (empty/0/None = no limit)."""

    max_lamports_per_transaction: int = 0
    allowed_vote_accounts: frozenset[str] = frozenset()
    allowed_wallets: frozenset[str] = frozenset()
    service_fee_bps: int | None = None
    max_priority_fee_lamports: int = 0
    """0: the operator's maximum only."""

    def check(
        self,
        *,
        wallet: str,
        amount_lamports: int,
        vote_account: str | None,
        new_withdrawer: str | None = None,
    ) -> None:
        """Raise `PolicyViolationError` naming the first limit the request breaks.

        Args:
            new_withdrawer: A withdraw authority the request hands the account to: it
                must be one of the allowed wallets, so that a key limited to some
                wallets cannot give their stake away to others.
        """
        if self.allowed_wallets and wallet not in self.allowed_wallets:
            raise PolicyViolationError(
                f"this API key may not build for wallet {wallet}",
                reason="POLICY_WALLET_NOT_ALLOWED",
                metadata={"policy": "allowed_wallets", "wallet": wallet},
            )
        if (
            new_withdrawer is not None
            and self.allowed_wallets
            and new_withdrawer not in self.allowed_wallets
        ):
            raise PolicyViolationError(
                f"this API key may not hand a withdraw authority to {new_withdrawer}, which is "
                "not one of its allowed wallets",
                reason="POLICY_WITHDRAWER_NOT_ALLOWED",
                metadata={"policy": "allowed_wallets", "new_withdrawer": new_withdrawer},
            )
        if (
            self.max_lamports_per_transaction
            and amount_lamports > self.max_lamports_per_transaction
        ):
            raise PolicyViolationError(
                f"amount_lamports {amount_lamports} exceeds this API key's limit of "
                f"{self.max_lamports_per_transaction} per transaction",
                reason="POLICY_MAX_LAMPORTS_EXCEEDED",
                metadata={
                    "policy": "max_lamports_per_transaction",
                    "max_lamports_per_transaction": self.max_lamports_per_transaction,
                    "requested_lamports": amount_lamports,
                },
            )
        if (
            vote_account is not None
            and self.allowed_vote_accounts
            and vote_account not in self.allowed_vote_accounts
        ):
            raise PolicyViolationError(
                f"this API key may not delegate to vote account {vote_account}",
                reason="POLICY_VOTE_ACCOUNT_NOT_ALLOWED",
                metadata={"policy": "allowed_vote_accounts", "vote_account": vote_account},
            )


UNRESTRICTED = CallerPolicy()
