"""Choosing accounts for an unstake amount: whole accounts first, the fewest accounts,
at most one split that keeps the minimum delegation on both sides; and, when nothing
works, the nearest amounts that do."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import UnstakeChoice, choose_unstake, nearest_unstake_amounts

SOL = 10**9
MIN = SOL


def _amount(stakes: list[int], choice: UnstakeChoice) -> int:
    return sum(stakes[i] for i in choice.whole) + choice.split_lamports


@pytest.mark.parametrize(
    ("stakes", "amount", "expected"),
    [
        # One whole account matches.
        ([5 * SOL, 3 * SOL], 3 * SOL, UnstakeChoice(whole=(1,))),
        # Two whole accounts before any split.
        ([5 * SOL, 3 * SOL, 2 * SOL], 5 * SOL, UnstakeChoice(whole=(0,))),
        ([5 * SOL, 3 * SOL, 2 * SOL], 8 * SOL, UnstakeChoice(whole=(0, 1))),
        # A split of the smallest account that keeps the minimum on both sides.
        ([5 * SOL, 3 * SOL], 3 * SOL // 2, UnstakeChoice(split=1, split_lamports=3 * SOL // 2)),
        ([5 * SOL, 3 * SOL], 5 * SOL // 2, UnstakeChoice(split=0, split_lamports=5 * SOL // 2)),
        # Whole accounts plus a split.
        (
            [3 * SOL, 5 * SOL // 2],
            9 * SOL // 2,
            UnstakeChoice(whole=(0,), split=1, split_lamports=3 * SOL // 2),
        ),
        # Nothing: 4.8 SOL of 3 + 2.5.
        ([3 * SOL, 5 * SOL // 2], 48 * SOL // 10, None),
        # Below the minimum and no account that small.
        ([3 * SOL], SOL // 2, None),
        # An account below the minimum may still go whole.
        ([3 * SOL, SOL // 2], SOL // 2, UnstakeChoice(whole=(1,))),
    ],
)
def test_choices(stakes: list[int], amount: int, expected: UnstakeChoice | None) -> None:
    assert choose_unstake(stakes, amount, minimum_delegation=MIN) == expected


def test_stakes_must_be_sorted() -> None:
    with pytest.raises(ValueError):
        choose_unstake([1, 2], 1, minimum_delegation=MIN)


def test_nearest_amounts() -> None:
    stakes = [3 * SOL, 5 * SOL // 2]
    assert nearest_unstake_amounts(stakes, 48 * SOL // 10, minimum_delegation=MIN) == (
        45 * SOL // 10,
        55 * SOL // 10,
    )
    assert nearest_unstake_amounts(stakes, SOL // 2, minimum_delegation=MIN) == (None, SOL)
    assert nearest_unstake_amounts(
        [3 * SOL], 5 * SOL // 2, minimum_delegation=MIN, max_accounts=1
    ) == (
        2 * SOL,
        3 * SOL,
    )


def _achievable(stakes: list[int], amount: int, max_accounts: int) -> bool:
    """Brute force: some whole accounts plus at most one valid split."""
    n = len(stakes)
    for size in range(0, min(n, max_accounts) + 1):
        for whole in itertools.combinations(range(n), size):
            rest = amount - sum(stakes[i] for i in whole)
            if rest == 0 and size:
                return True
            if size + 1 > max_accounts:
                continue
            for j in range(n):
                if j not in whole and MIN <= rest <= stakes[j] - MIN:
                    return True
    return False


stake_lists = st.lists(
    st.integers(min_value=SOL // 2, max_value=12 * SOL).map(lambda x: x // 10**8 * 10**8),
    min_size=1,
    max_size=6,
).map(lambda xs: sorted(xs, reverse=True))


@settings(max_examples=300, deadline=None)
@given(stakes=stake_lists, amount=st.integers(min_value=1, max_value=40 * SOL), k=st.integers(1, 4))
def test_choice_is_exact_valid_and_complete(stakes: list[int], amount: int, k: int) -> None:
    choice = choose_unstake(stakes, amount, minimum_delegation=MIN, max_accounts=k)
    if choice is None:
        assert not _achievable(stakes, amount, k)
        lower, higher = nearest_unstake_amounts(
            stakes, amount, minimum_delegation=MIN, max_accounts=k
        )
        for suggestion in (lower, higher):
            if suggestion is not None:
                assert _achievable(stakes, suggestion, k)
                assert choose_unstake(stakes, suggestion, minimum_delegation=MIN, max_accounts=k)
        if lower is not None:
            assert lower < amount
        if higher is not None:
            assert higher > amount
        return
    assert _amount(stakes, choice) == amount
    touched = [*choice.whole, *([choice.split] if choice.split is not None else [])]
    assert len(set(touched)) == len(touched) <= k
    if choice.split is not None:
        assert MIN <= choice.split_lamports <= stakes[choice.split] - MIN
        # Whole accounts first: no exact whole-only choice existed.
        for size in range(1, min(len(stakes), k) + 1):
            for whole in itertools.combinations(range(len(stakes)), size):
                assert sum(stakes[i] for i in whole) != amount
