"""Fee arithmetic: service fee, network (signature) fee, priority fee.

All amounts are integer lamports; rounding is stated per function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_range, check_u64
from service.core.errors import InvalidArgumentError
from service.core.programs import LAMPORTS_PER_SIGNATURE, MAX_COMPUTE_UNIT_LIMIT

BPS_DENOMINATOR: Final = 10_000
MICRO_LAMPORTS_PER_LAMPORT: Final = 1_000_000
# A transaction carries at most this many signatures (fits in 1232 bytes).
MAX_SIGNATURES: Final = 19

PRIORITY_PERCENTILES: Final[Mapping[str, int]] = {
    "low": 25,
    "medium": 50,
    "high": 75,
    "very_high": 95,
}
"""The percentile of recent prioritization fees each automatic priority level pays
(``PriorityLevel`` in types.proto; ``none`` pays nothing)."""


@dataclass(frozen=True, kw_only=True)
class ServiceFee:
    """The operator's fee on a build: ``bps`` of the amount, paid to ``recipient``.

    ``bps == 0`` means no fee and no fee instruction at all; a recipient is required
    otherwise.
    """

    bps: int = 0
    recipient: Pubkey | None = None

    def __post_init__(self) -> None:
        check_range(self.bps, field="service_fee_bps", low=0, high=BPS_DENOMINATOR)
        if self.bps and self.recipient is None:
            raise InvalidArgumentError("a service fee needs a fee recipient", field="fee_recipient")

    def on(self, amount_lamports: int) -> int:
        """The fee on an amount (floor)."""
        return service_fee_lamports(amount_lamports, self.bps)


def service_fee_lamports(amount_lamports: int, bps: int) -> int:
    """``floor(amount * bps / 10_000)``: rounding favours the payer."""
    check_lamports(amount_lamports, field="amount_lamports")
    check_range(bps, field="service_fee_bps", low=0, high=BPS_DENOMINATOR)
    return amount_lamports * bps // BPS_DENOMINATOR


def network_fee_lamports(
    signature_count: int, lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
) -> int:
    """Base fee: ``lamports_per_signature`` per signature the transaction carries."""
    check_range(signature_count, field="signature_count", low=1, high=MAX_SIGNATURES)
    check_u64(lamports_per_signature, field="lamports_per_signature")
    return signature_count * lamports_per_signature


def priority_fee_lamports(compute_unit_price_micro_lamports: int, compute_unit_limit: int) -> int:
    """``ceil(price * limit / 1_000_000)``: the runtime charges the requested limit,
    not the units consumed, and rounds up."""
    check_u64(compute_unit_price_micro_lamports, field="compute_unit_price_micro_lamports")
    check_range(compute_unit_limit, field="compute_unit_limit", low=0, high=MAX_COMPUTE_UNIT_LIMIT)
    return -(-compute_unit_price_micro_lamports * compute_unit_limit // MICRO_LAMPORTS_PER_LAMPORT)


@dataclass(frozen=True, kw_only=True)
class FeeBreakdown:
    """Every lamport a prepared transaction costs the wallet, itemised.

    ``total_debit_lamports`` is what leaves the wallet: for a stake build, amount +
    rent-exempt reserve + service fee + network fee + priority fee.
    """

    service_fee_lamports: int
    service_fee_bps: int
    fee_recipient: Pubkey | None
    network_fee_lamports: int
    priority_fee_lamports: int
    rent_exempt_reserve_lamports: int
    total_debit_lamports: int

    def __post_init__(self) -> None:
        for name in (
            "service_fee_lamports",
            "network_fee_lamports",
            "priority_fee_lamports",
            "rent_exempt_reserve_lamports",
            "total_debit_lamports",
        ):
            check_lamports(getattr(self, name), field=name)
        check_range(self.service_fee_bps, field="service_fee_bps", low=0, high=BPS_DENOMINATOR)


def priority_fee_percentile(recent_fees: Sequence[int], percentile: int) -> int:
    """Nearest-rank ``percentile`` of recent per-block prioritization fees
    (micro-lamports per compute unit): the smallest fee that at least ``percentile``
    percent of them do not exceed (of n fees in order, the ceil(percentile x n /
    100)-th; the median of an even count is the lower middle one). 0 when there are
    none."""
    check_range(percentile, field="percentile", low=0, high=100)
    if not recent_fees:
        return 0
    ordered = sorted(recent_fees)
    rank = max(1, -(-percentile * len(ordered) // 100))
    return ordered[rank - 1]
