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

# SPL token programs and the associated token account program (both token programs
# ship with LiteSVM, so the localnet runs them).
TOKEN_PROGRAM: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM: Final = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN_PROGRAM: Final = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
# The SPL stake-pool program. Sanctum runs two deployments of the same program
# (same instructions and account layouts) for its single- and multi-validator pools.
STAKE_POOL_PROGRAM: Final = Pubkey.from_string("SPoo1Ku8WFXoNDMHPsrGSTSG1Y47rzgn41SLUNakuHy")
SANCTUM_SINGLE_POOL_PROGRAM: Final = Pubkey.from_string(
    "SP1s4uFeTAX9jsXXmwyDs1gxYYf7cdDZ8qHUHVxE1yr"
)
SANCTUM_MULTI_POOL_PROGRAM: Final = Pubkey.from_string(
    "SPMBzsVUuoHA4Jm6KunbsotaahvVikZs1JyTW6iJvbn"
)
STAKE_POOL_PROGRAMS: Final = frozenset(
    {STAKE_POOL_PROGRAM, SANCTUM_SINGLE_POOL_PROGRAM, SANCTUM_MULTI_POOL_PROGRAM}
)

SYSVAR_CLOCK: Final = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
SYSVAR_RENT: Final = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
SYSVAR_STAKE_HISTORY: Final = Pubkey.from_string("SysvarStakeHistory1111111111111111111111111")
SYSVAR_RECENT_BLOCKHASHES: Final = Pubkey.from_string("SysvarRecentB1ockHashes11111111111111111111")

# The runtime's reserved account keys (its builtin programs and sysvars, which it never
# lets a transaction write) and the programs above: no one holds a key for any of them,
# and a program cannot sign as its own id, so none can pay fees or act as an authority,
# whether or not its bytes happen to be an ed25519 point (the System and Stake program
# ids and the Clock and Rent sysvars are).
UNSIGNABLE_KEYS: Final = frozenset(
    {
        SYSTEM_PROGRAM,
        STAKE_PROGRAM,
        VOTE_PROGRAM,
        COMPUTE_BUDGET_PROGRAM,
        MEMO_PROGRAM,
        TOKEN_PROGRAM,
        TOKEN_2022_PROGRAM,
        ASSOCIATED_TOKEN_PROGRAM,
        *STAKE_POOL_PROGRAMS,
        STAKE_CONFIG,
        *(
            Pubkey.from_string(key)
            for key in (
                "AddressLookupTab1e1111111111111111111111111",
                "BPFLoader1111111111111111111111111111111111",
                "BPFLoader2111111111111111111111111111111111",
                "BPFLoaderUpgradeab1e11111111111111111111111",
                "Config1111111111111111111111111111111111111",
                "Ed25519SigVerify111111111111111111111111111",
                "Feature111111111111111111111111111111111111",
                "KeccakSecp256k11111111111111111111111111111",
                "LoaderV411111111111111111111111111111111111",
                "NativeLoader1111111111111111111111111111111",
                "Secp256r1SigVerify1111111111111111111111111",
                "ZkE1Gama1Proof11111111111111111111111111111",
                "ZkTokenProof1111111111111111111111111111111",
                "Sysvar1111111111111111111111111111111111111",
                "SysvarC1ock11111111111111111111111111111111",
                "SysvarEpochRewards1111111111111111111111111",
                "SysvarEpochSchedu1e111111111111111111111111",
                "SysvarFees111111111111111111111111111111111",
                "Sysvar1nstructions1111111111111111111111111",
                "SysvarLastRestartS1ot1111111111111111111111",
                "SysvarRecentB1ockHashes11111111111111111111",
                "SysvarRent111111111111111111111111111111111",
                "SysvarRewards111111111111111111111111111111",
                "SysvarS1otHashes111111111111111111111111111",
                "SysvarS1otHistory11111111111111111111111111",
                "SysvarStakeHistory1111111111111111111111111",
            )
        ),
    }
)

STAKE_ACCOUNT_SIZE: Final = 200
VOTE_ACCOUNT_SIZE: Final = 3762
LAMPORTS_PER_SOL: Final = 1_000_000_000
LAMPORTS_PER_SIGNATURE: Final = 5_000
U64_MAX: Final = 2**64 - 1
NONCE_ACCOUNT_SIZE: Final = 80
# SPL token account and mint sizes (without Token-2022 extensions).
TOKEN_ACCOUNT_SIZE: Final = 165
MINT_SIZE: Final = 82

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
        TOKEN_PROGRAM: "Token",
        TOKEN_2022_PROGRAM: "Token2022",
        ASSOCIATED_TOKEN_PROGRAM: "AssociatedToken",
        **{program: "StakePool" for program in STAKE_POOL_PROGRAMS},
    }
)
