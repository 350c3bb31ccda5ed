"""Synthetic voting: the epoch credits a validator earns by voting every slot.

Each validator of the localnet votes on every slot up to its last vote and earns
``MAX_CREDITS_PER_SLOT`` times its credit rate per voted slot (its share of timely
votes), floored per epoch. Credits are a running total from genesis, as the vote
program keeps them, so a stake's ``credits_observed`` stays comparable across
epochs; the vote account holds the newest ``MAX_EPOCH_CREDITS_HISTORY`` entries.
"""

from __future__ import annotations

from solders.epoch_schedule import EpochSchedule

# Votes earn up to 16 credits per slot (timely vote credits).
MAX_CREDITS_PER_SLOT = 16
# Entries a vote account keeps (the vote program's MAX_EPOCH_CREDITS_HISTORY).
MAX_EPOCH_CREDITS_HISTORY = 64


def epoch_credits(
    *, credit_rate: float, last_vote: int, schedule: EpochSchedule
) -> tuple[tuple[int, int, int], ...]:
    """``(epoch, credits at its end, credits at its start)`` for a validator that
    voted on every slot from genesis to ``last_vote``, newest last.

    Epochs earn ``int(voted slots * 16 * credit_rate)``: every full epoch the same
    (the schedule has no warmup), the epoch of ``last_vote`` its part so far.
    """
    last_epoch = int(schedule.get_epoch(last_vote))
    full = int(schedule.get_slots_in_epoch(0) * MAX_CREDITS_PER_SLOT * credit_rate)
    voted = last_vote - int(schedule.get_first_slot_in_epoch(last_epoch)) + 1
    partial = int(voted * MAX_CREDITS_PER_SLOT * credit_rate)
    entries = []
    for epoch in range(max(0, last_epoch - MAX_EPOCH_CREDITS_HISTORY + 1), last_epoch + 1):
        earned = full if epoch < last_epoch else partial
        before = epoch * full
        if earned:
            entries.append((epoch, before + earned, before))
    return tuple(entries)
