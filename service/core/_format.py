"""Amounts as people read them (private; re-exported by ``summaries``)."""

from __future__ import annotations

from typing import Final

SOL_DECIMALS: Final = 9
"""1 SOL = 10**9 lamports."""


def format_sol(lamports: int) -> str:
    """Exact decimal SOL, e.g. ``2.00228288 SOL`` (no float rounding)."""
    return format_units(lamports, SOL_DECIMALS, "SOL")


def format_amount(lamports: int) -> str:
    """``1.5 SOL (1,500,000,000 lamports)``."""
    return f"{format_sol(lamports)} ({lamports:,} lamports)"


def format_units(amount: int, decimals: int, unit: str) -> str:
    """Exact decimal amount of a token with ``decimals``, e.g. ``1.25 pool tokens``."""
    whole, frac = divmod(amount, 10**decimals)
    if not frac:
        return f"{whole} {unit}"
    return f"{whole}.{frac:0{decimals}d}".rstrip("0") + f" {unit}"


def pascal_case(snake: str) -> str:
    """``MOVE_STAKE`` -> ``MoveStake`` (enum member names as instruction names)."""
    return "".join(part.capitalize() for part in snake.split("_"))
