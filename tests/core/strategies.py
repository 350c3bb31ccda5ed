"""Hypothesis strategies for core values."""

from __future__ import annotations

from hypothesis import strategies as st
from solders.hash import Hash
from solders.pubkey import Pubkey

from service.core import Lockup
from service.core._bincode import I64_MAX, I64_MIN
from service.core.programs import U64_MAX

pubkeys = st.binary(min_size=32, max_size=32).map(Pubkey.from_bytes)
hashes = st.binary(min_size=32, max_size=32).map(Hash)
u64s = st.integers(min_value=0, max_value=U64_MAX)
u32s = st.integers(min_value=0, max_value=2**32 - 1)
i64s = st.integers(min_value=I64_MIN, max_value=I64_MAX)
lamports = u64s
positive_lamports = st.integers(min_value=1, max_value=U64_MAX)
seeds = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32
)
lockups = st.builds(Lockup, unix_timestamp=i64s, epoch=u64s, custodian=pubkeys)
