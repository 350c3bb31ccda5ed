"""Fixtures for the core suite: a fresh in-process LiteSVM per test (about 20 ms)."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from tests.core._chain import Cluster, create_vote_account, funded_keypair, new_svm
from tests.core._harness import Harness


@pytest.fixture
def svm() -> LiteSVM:
    """LiteSVM with an epoch schedule without warmup and a consistent clock at epoch 0."""
    return new_svm()


@pytest.fixture
def funder(svm: LiteSVM) -> Keypair:
    return funded_keypair(svm, 1_000 * 10**9)


@pytest.fixture
def vote_account(svm: LiteSVM, funder: Keypair) -> Pubkey:
    """A vote account initialized by the real Vote program."""
    return create_vote_account(svm, funder)


@pytest.fixture
def wallet(svm: LiteSVM) -> Keypair:
    """The agent's wallet: 100 SOL."""
    return funded_keypair(svm, 100 * 10**9)


@pytest.fixture
def fee_recipient() -> Pubkey:
    return Keypair().pubkey()


@pytest.fixture
def harness(svm: LiteSVM, vote_account: Pubkey, wallet: Keypair) -> Harness:
    """The wallet with stake accounts on the runtime, epochs driven like a bank."""
    return Harness(svm, vote_account, Cluster(svm), wallet)
