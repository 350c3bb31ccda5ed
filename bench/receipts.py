"""What a receipt costs a build: the payload of a stake build's receipt and its Ed25519
signature, exactly as the gate makes them (``BuildGate.sign`` on the response's
PreparedTransaction), against the stake plan itself and the proto conversion of the
response, in a tight loop in this process (CPU only: no server, no I/O).

Prints one JSON object: microseconds per call of each, medians of ``--rounds``
rounds of ``--calls`` calls.

Run: ``python -m bench.receipts [--calls 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from solders.hash import Hash
from solders.keypair import Keypair

from service.api import BuildGate
from service.api._converters import prepared_to_proto
from service.chain import ChainContext, IntentBook
from service.core import (
    RecentBlockhash,
    SeedPurpose,
    ServiceFee,
    StakeContext,
    StakeRequest,
    build_stake_transaction,
    seed_from_request_id,
)
from service.receipts import ReceiptSigner

SOL = 1_000_000_000


def _per_call(run: Callable[[], Any], calls: int, rounds: int) -> float:
    for _ in range(calls // 10):
        run()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return round(statistics.median(samples), 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    wallet = Keypair().pubkey()
    request = StakeRequest(
        wallet=wallet,
        vote_account=Keypair().pubkey(),
        amount_lamports=2 * SOL,
        seed=seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id="b"),
        service_fee=ServiceFee(bps=10, recipient=Keypair().pubkey()),
    )
    context = StakeContext(
        lifetime=RecentBlockhash(blockhash=Hash.new_unique(), last_valid_block_height=1_000),
        rent_exempt_reserve_lamports=2_282_880,
        minimum_delegation_lamports=SOL,
        epoch=1,
    )
    plan = build_stake_transaction(request, context)
    signer = ReceiptSigner(
        Path(tempfile.mkdtemp()) / "receipt-keys.json", create=True, now=datetime.now(UTC)
    )
    # The gate reads the cluster's genesis hash from the chain context, nothing else.
    chain = SimpleNamespace(snapshot=lambda: SimpleNamespace(genesis_hash=str(Hash.default())))
    gate = BuildGate(signer=signer, chain=cast(ChainContext, chain), book=cast(IntentBook, None))
    prepared = prepared_to_proto(plan.prepared)

    def receipt() -> None:
        gate.sign(prepared, kind="BuildStakeTransaction", request_id="", attempt=0, scope="k")

    report = {
        "benchmark": "receipts",
        "calls": args.calls,
        "rounds": args.rounds,
        "microseconds_per_call": {
            "stake plan (core)": _per_call(
                lambda: build_stake_transaction(request, context), args.calls, args.rounds
            ),
            "response conversion (prepared_to_proto)": _per_call(
                lambda: prepared_to_proto(plan.prepared), args.calls, args.rounds
            ),
            "receipt (payload + Ed25519 signature)": _per_call(receipt, args.calls, args.rounds),
        },
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
