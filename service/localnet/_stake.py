"""Stake accounting the localnet needs at epoch boundaries (provisional; moves to core)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from solders.pubkey import Pubkey

from service.core.programs import U64_MAX

WARMUP_COOLDOWN_RATE = 0.09


@dataclass(frozen=True, kw_only=True)
class Delegation:
    voter: Pubkey
    stake: int
    activation_epoch: int
    deactivation_epoch: int


def delegation_of(data: bytes) -> Delegation | None:
    if len(data) < 188 or struct.unpack_from("<I", data, 0)[0] != 2:
        return None
    stake, act, deact = struct.unpack_from("<QQQ", data, 156)
    return Delegation(
        voter=Pubkey(data[124:156]), stake=stake, activation_epoch=act, deactivation_epoch=deact
    )


def _stake_and_activating(
    d: Delegation, target: int, history: Mapping[int, tuple[int, int, int]]
) -> tuple[int, int]:
    if d.activation_epoch == U64_MAX:
        return d.stake, 0
    if d.activation_epoch == d.deactivation_epoch:
        return 0, 0
    if target == d.activation_epoch:
        return 0, d.stake
    if target < d.activation_epoch:
        return 0, 0
    prev = history.get(d.activation_epoch)
    if prev is None:
        return d.stake, 0
    prev_epoch = d.activation_epoch
    effective = 0
    while True:
        current_epoch = prev_epoch + 1
        if prev[1] == 0:
            break
        remaining = d.stake - effective
        weight = remaining / prev[1]
        newly = max(int(weight * (prev[0] * WARMUP_COOLDOWN_RATE)), 1)
        effective += newly
        if effective >= d.stake:
            effective = d.stake
            break
        if current_epoch >= target or current_epoch >= d.deactivation_epoch:
            break
        nxt = history.get(current_epoch)
        if nxt is None:
            break
        prev_epoch, prev = current_epoch, nxt
    return effective, d.stake - effective


def stake_status(
    d: Delegation, target: int, history: Mapping[int, tuple[int, int, int]]
) -> tuple[int, int, int]:
    effective, activating = _stake_and_activating(d, target, history)
    if target < d.deactivation_epoch:
        return effective, activating, 0
    if target == d.deactivation_epoch:
        return effective, 0, effective
    prev = history.get(d.deactivation_epoch)
    if prev is None:
        return 0, 0, 0
    prev_epoch = d.deactivation_epoch
    current = effective
    while True:
        current_epoch = prev_epoch + 1
        if prev[2] == 0:
            break
        weight = current / prev[2]
        newly = max(int(weight * (prev[0] * WARMUP_COOLDOWN_RATE)), 1)
        current = max(current - newly, 0)
        if current == 0 or current_epoch >= target:
            break
        nxt = history.get(current_epoch)
        if nxt is None:
            break
        prev_epoch, prev = current_epoch, nxt
    return current, 0, current


def stake_history_entry(
    delegations: Iterable[Delegation], epoch: int, history: Mapping[int, tuple[int, int, int]]
) -> tuple[int, int, int]:
    e = a = de = 0
    for d in delegations:
        x, y, z = stake_status(d, epoch, history)
        e += x
        a += y
        de += z
    return e, a, de
