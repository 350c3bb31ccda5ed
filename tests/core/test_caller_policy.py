"""A key's policy on handing a withdraw authority over."""

from __future__ import annotations

import pytest

from service.core.policy import UNRESTRICTED, CallerPolicy, PolicyViolationError

WALLET, HEIR, STRANGER = "Wallet1", "Heir1", "Stranger1"


def test_new_withdrawer_must_be_an_allowed_wallet() -> None:
    UNRESTRICTED.check(wallet=WALLET, amount_lamports=0, vote_account=None, new_withdrawer=HEIR)
    policy = CallerPolicy(allowed_wallets=frozenset({WALLET, HEIR}))
    policy.check(wallet=WALLET, amount_lamports=0, vote_account=None, new_withdrawer=HEIR)
    with pytest.raises(PolicyViolationError) as caught:
        policy.check(wallet=WALLET, amount_lamports=0, vote_account=None, new_withdrawer=STRANGER)
    assert caught.value.reason == "POLICY_WITHDRAWER_NOT_ALLOWED"
    assert caught.value.metadata == {"policy": "allowed_wallets", "new_withdrawer": STRANGER}
    # The wallet itself is checked first.
    with pytest.raises(PolicyViolationError) as caught:
        policy.check(wallet=STRANGER, amount_lamports=0, vote_account=None, new_withdrawer=HEIR)
    assert caught.value.reason == "POLICY_WALLET_NOT_ALLOWED"
