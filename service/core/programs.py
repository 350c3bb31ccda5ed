"""Addresses of the programs and sysvars that staking transactions touch."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from solders.pubkey import Pubkey

SYSTEM_PROGRAM: Final = Pubkey.from_string("11111111111111111111111111111111")
STAKE_PROGRAM: Final = Pubkey.from_string("Stake11111111111111111111111111111111111111")
VOTE_PROGRAM: Final = Pubkey.from_string("Vote111111111111111111111111111111111111111")
COMPUTE_BUDGET_PROGRAM: Final = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
MEMO_PROGRAM: Final = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
# Still passed to DelegateStake for compatibility; the program ignores its contents.
STAKE_CONFIG: Final = Pubkey.from_string("StakeConfig11111111111111111111111111111111")

SYSVAR_CLOCK: Final = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
SYSVAR_RENT: Final = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
SYSVAR_STAKE_HISTORY: Final = Pubkey.from_string("SysvarStakeHistory1111111111111111111111111")
SYSVAR_RECENT_BLOCKHASHES: Final = Pubkey.from_string("SysvarRecentB1ockHashes11111111111111111111")

STAKE_ACCOUNT_SIZE: Final = 200
VOTE_ACCOUNT_SIZE: Final = 3762
LAMPORTS_PER_SOL: Final = 1_000_000_000
LAMPORTS_PER_SIGNATURE: Final = 5_000
U64_MAX: Final = 2**64 - 1
NONCE_ACCOUNT_SIZE: Final = 80

# Largest serialized transaction the network accepts (IPv6 MTU minus headers).
MAX_TRANSACTION_SIZE: Final = 1232
# Longest seed `Pubkey::create_with_seed` accepts.
MAX_SEED_LEN: Final = 32
# Per-transaction compute unit ceiling of SetComputeUnitLimit.
MAX_COMPUTE_UNIT_LIMIT: Final = 1_400_000

# Display names for the programs the instruction decoder understands.
PROGRAM_NAMES: Final[Mapping[Pubkey, str]] = MappingProxyType(
    {
        SYSTEM_PROGRAM: "System",
        STAKE_PROGRAM: "Stake",
        VOTE_PROGRAM: "Vote",
        COMPUTE_BUDGET_PROGRAM: "ComputeBudget",
        MEMO_PROGRAM: "Memo",
    }
)
