"""Amounts a plan accepts, and the error that names the nearest ones that work.

A plan that refuses an amount (because a part would fall below the minimum
delegation, say) tells the caller which amounts it would accept instead: the
closest from below and from above. Each plan describes what it accepts as closed
ranges of lamports; :func:`nearest_amounts` finds the two nearest amounts in them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from service.core.errors import DomainError

AmountError = TypeVar("AmountError", bound=DomainError)


def nearest_amounts(
    ranges: Iterable[tuple[int, int]], amount: int
) -> tuple[int | None, int | None]:
    """The accepted amounts closest to ``amount`` from below and from above.

    Args:
        ranges: Closed ranges ``(low, high)`` of accepted amounts; empty ranges
            (``low > high``) are skipped.
        amount: The refused amount.

    Returns:
        ``(lower, higher)``: the largest accepted amount at most ``amount`` and the
        smallest at least ``amount``; None where there is none.
    """
    lower: int | None = None
    higher: int | None = None
    for low, high in ranges:
        if low > high:
            continue
        if low <= amount:
            below = min(high, amount)
            lower = below if lower is None else max(lower, below)
        if high >= amount:
            above = max(low, amount)
            higher = above if higher is None else min(higher, above)
    return lower, higher


def amount_error(
    error: type[AmountError],
    message: str,
    *,
    amount: int,
    minimum: int,
    lower: int | None,
    higher: int | None,
) -> AmountError:
    """``error`` for a refused ``amount``, its message and metadata naming the nearest
    amounts that work (``nearest_lower_lamports``, ``nearest_higher_lamports``)."""
    metadata: dict[str, str | int] = {"requested_lamports": amount, "minimum_lamports": minimum}
    suggestions = []
    if lower is not None:
        metadata["nearest_lower_lamports"] = lower
        suggestions.append(f"{lower}")
    if higher is not None:
        metadata["nearest_higher_lamports"] = higher
        suggestions.append(f"{higher}")
    if suggestions:
        message += f"; the nearest amounts that work are {' and '.join(suggestions)} lamports"
    return error(message, field="amount_lamports", metadata=metadata)
