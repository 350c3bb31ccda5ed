"""What BuildStakeTransaction costs the servicer, in process: the servicer method
(request conversion, the chain shell, the stake plan, the response conversion and
the receipt) called in a tight loop on a real localnet's cached chain context, with
no gRPC and no interceptors; and the stake plan alone, filled into its template and
built the general way (``template=False``), in the same run.

Prints one JSON object: microseconds per call (median of ``--rounds`` rounds of
``--calls`` calls). With ``--callgrind`` each figure is instead the number of
instructions per call that valgrind's callgrind counts (a run of ``--callgrind``
calls less a run of none), which the load of a shared machine does not change.

With ``--mypyc`` the same figures come from a copy of the committed tree twice: as
it is, then with the plan, receipt, fee, seed, validation and formatting modules
(``COMPILED``) compiled to C extensions by mypyc, to show what a compiler buys on
this path. (The servicer's own modules are left out: mypyc checks declared types at
run time and rejects async generators, and compiled, they fail.)

With ``--priced`` the cluster's recent prioritization fees are not zero, as on
mainnet (``bench._priced``): every build, priced by its default level, pays a price.

Run: ``python -m bench.servicer [--calls 2000] [--rounds 5] [--callgrind 200] [--mypyc]
[--priced]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from agentstaking.v1 import staking_pb2
from solders.hash import Hash
from solders.keypair import Keypair

from bench._callgrind import instructions_by_object
from bench._priced import PRICE, pay_priority_fees
from service.api import BuildGate
from service.api._staking import StakingServicer
from service.chain import ChainContext, FeePolicy, HttpSolanaRpc, IntentBook, StakingOperations
from service.core import (
    RecentBlockhash,
    SeedPurpose,
    ServiceFee,
    StakeContext,
    StakeRequest,
    build_stake_transaction,
    seed_from_request_id,
)
from service.localnet import LocalnetServer
from service.receipts import ReceiptSigner

SOL = 1_000_000_000
WALLETS = 16
WARMUP = 50
MEASURES = ("servicer", "plan (template)", "plan (general)")
ROOT = Path(__file__).resolve().parents[1]
COMPILED = (
    "service/core/plans/_template.py",
    "service/core/plans/_stake.py",
    "service/core/plans/_transaction.py",
    "service/core/receipts.py",
    "service/core/fees.py",
    "service/core/seeds.py",
    "service/core/_validate.py",
    "service/core/_format.py",
)


class _Context:
    """What the servicer's error handling reads of a call's context."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"the build failed: {code} {details}")


async def _measures(
    calls: int, rounds: int, only: str | None, priced: bool = False
) -> dict[str, float]:
    localnet = LocalnetServer()
    await localnet.start()
    rpc = HttpSolanaRpc(localnet.url)
    try:
        if priced:
            await pay_priority_fees(localnet.url)
        now = time.monotonic()
        # A frozen clock: the cached blockhash never ages during the loop.
        chain = ChainContext(rpc, clock=lambda: now)
        await chain.refresh()
        vote = str(localnet.chain.validators[0].vote_account)
        operations = StakingOperations(
            rpc=rpc,
            context=chain,
            fee=FeePolicy(bps=25, recipient=str(Keypair().pubkey())),
            default_vote_account=vote,
            # Each wallet's recent prioritization fees read once, as at the throughput
            # runs' rates (not again every few calls when Valgrind slows the loop).
            priority_fees_cache_seconds=3600,
        )
        signer = ReceiptSigner(
            Path(tempfile.mkdtemp()) / "receipt-keys.json", create=True, now=datetime.now(UTC)
        )
        # No request_id: the intent book is never read.
        gate = BuildGate(signer=signer, chain=chain, book=cast(IntentBook, None))
        servicer = StakingServicer(operations, gate=gate)
        context = cast(Any, _Context())
        # As bench.run sends them: the default validator, no request_id.
        requests = [
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair().pubkey()), amount_lamports=2 * SOL
            )
            for _ in range(WALLETS)
        ]
        wallet = Keypair().pubkey()
        plan_request = StakeRequest(
            wallet=wallet,
            vote_account=Keypair().pubkey(),
            amount_lamports=2 * SOL,
            seed=seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id="b"),
            service_fee=ServiceFee(bps=25, recipient=Keypair().pubkey()),
        )
        snapshot = chain.snapshot()
        plan_context = StakeContext(
            lifetime=RecentBlockhash(
                blockhash=Hash.from_string(snapshot.blockhash),
                last_valid_block_height=snapshot.last_valid_block_height,
            ),
            rent_exempt_reserve_lamports=snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=snapshot.minimum_delegation,
            epoch=snapshot.epoch,
        )

        if priced:
            built = await servicer.BuildStakeTransaction(requests[0], context)
            if built.transaction.compute_unit_price_micro_lamports != PRICE:
                raise RuntimeError("the cluster's fees did not price the build")

        async def servicer_calls(n: int) -> None:
            for i in range(n):
                await servicer.BuildStakeTransaction(requests[i % WALLETS], context)

        def plan_calls(template: bool) -> Callable[[int], Awaitable[None]]:
            async def run(n: int) -> None:
                for _ in range(n):
                    build_stake_transaction(plan_request, plan_context, template=template)

            return run

        loops = {
            "servicer": servicer_calls,
            "plan (template)": plan_calls(True),
            "plan (general)": plan_calls(False),
        }
        report: dict[str, float] = {}
        for name, loop in loops.items():
            if only is not None and name != only:
                continue
            # Warm-up (templates learnt, caches filled): the same for every --calls, so
            # that two callgrind runs differ by their calls alone.
            await loop(WARMUP)
            # As the server does once it serves: what start-up made out of the
            # collector's full passes, which would otherwise fall into some runs' calls
            # and not others' (a pass walks every object: over a million instructions).
            gc.collect()
            gc.freeze()
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                await loop(calls)
                samples.append((time.perf_counter() - started) / max(calls, 1) * 1e6)
            report[name] = round(statistics.median(samples), 1)
        return report
    finally:
        await rpc.close()
        await localnet.stop()


def _instructions(measure: str, calls: int, tree: Path = ROOT, *, priced: bool = False) -> int:
    """Instructions callgrind counts for a run of ``calls`` calls of ``measure`` (the
    code of ``tree``)."""
    return _callgrind_run(measure, calls, tree, priced=priced)[0]


def _callgrind_run(
    measure: str, calls: int, tree: Path = ROOT, *, priced: bool = False
) -> tuple[int, dict[str, int]]:
    """The instructions of a run of ``calls`` calls of ``measure``: in all, and by the
    object (program or library) whose own code executed them."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={folder}/callgrind.out",
                sys.executable,
                "-m",
                "bench.servicer",
                "--only",
                measure,
                "--calls",
                str(calls),
                "--rounds",
                "1",
                *(["--priced"] if priced else []),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=tree,
            env=_env(tree),
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"callgrind reported no count: {done.stderr[-500:]}")
        total, by_object = int(found.group(1)), instructions_by_object(f"{folder}/callgrind.out")
        counted = sum(by_object.values())
        if counted != total:  # the file not read as callgrind wrote it
            raise RuntimeError(f"callgrind's file adds up to {counted}, not {total}")
        return total, by_object


def _by_object(calls: int, *, priced: bool) -> dict[str, int]:
    """The servicer's instructions per call by the object whose code executed them
    (a run of ``calls`` calls less a run of none), largest first; objects under 0.5 %
    of the total together as ``other``."""
    _, base = _callgrind_run("servicer", 0, priced=priced)
    _, run = _callgrind_run("servicer", calls, priced=priced)
    per_call = {name: (run.get(name, 0) - base.get(name, 0)) // calls for name in run}
    total = sum(per_call.values())
    shown = {
        name: count
        for name, count in sorted(per_call.items(), key=lambda item: -item[1])
        if count >= total * 0.005
    }
    return {**shown, "other": total - sum(shown.values()), "total": total}


def _env(tree: Path) -> dict[str, str]:
    """The environment in which ``service`` and ``bench`` are imported from ``tree``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }


def _committed_tree(folder: Path) -> Path:
    """A copy of the committed tree in ``folder`` (uncommitted changes left out)."""
    archive = subprocess.run(
        ["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _compile(tree: Path) -> None:
    """Compile ``COMPILED`` in ``tree`` with mypyc, the extensions beside the sources."""
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", *COMPILED], cwd=tree, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"mypyc failed: {(done.stdout + done.stderr)[-2000:]}")


def _report(tree: Path, callgrind: int, calls: int, rounds: int) -> dict[str, Any]:
    """The figures for the code of ``tree``: instructions or microseconds per call."""
    if callgrind:
        return {
            name: (_instructions(name, callgrind, tree) - _instructions(name, 0, tree)) // callgrind
            for name in MEASURES
        }
    done = subprocess.run(
        [sys.executable, "-m", "bench.servicer", "--calls", str(calls), "--rounds", str(rounds)],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)["microseconds_per_call"]
    return report


def _compared(callgrind: int, calls: int, rounds: int) -> dict[str, Any]:
    """The figures for the committed tree as it is and with ``COMPILED`` compiled."""
    with tempfile.TemporaryDirectory() as folder:
        tree = _committed_tree(Path(folder))
        interpreted = _report(tree, callgrind, calls, rounds)
        _compile(tree)
        compiled = _report(tree, callgrind, calls, rounds)
    return {
        "compiled_modules": list(COMPILED),
        "interpreted": interpreted,
        "compiled": compiled,
        "change": {name: round(compiled[name] / interpreted[name] - 1, 4) for name in MEASURES},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--callgrind",
        type=int,
        default=0,
        metavar="CALLS",
        help="count instructions per call over this many calls (valgrind) instead",
    )
    parser.add_argument(
        "--mypyc",
        action="store_true",
        help="compare the committed tree with and without its plan modules compiled by mypyc",
    )
    parser.add_argument(
        "--priced",
        action="store_true",
        help="on a cluster whose recent prioritization fees are not zero",
    )
    parser.add_argument(
        "--by-object",
        action="store_true",
        help="with --callgrind: the servicer's instructions by the program or library "
        "whose own code executed them",
    )
    parser.add_argument("--only", choices=MEASURES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callgrind and shutil.which("valgrind") is None:
        parser.error("--callgrind needs valgrind")
    if args.by_object and not args.callgrind:
        parser.error("--by-object needs --callgrind CALLS")
    if args.mypyc:
        unit = "instructions_per_call" if args.callgrind else "microseconds_per_call"
        figures = _compared(args.callgrind, args.calls, args.rounds)
        print(json.dumps({"benchmark": "servicer", "mypyc": True, "unit": unit, **figures}))
        return
    if args.callgrind and args.by_object:
        by_object = _by_object(args.callgrind, priced=args.priced)
        print(
            json.dumps(
                {
                    "benchmark": "servicer",
                    "calls": args.callgrind,
                    "priced": args.priced,
                    "instructions_per_call_by_object": by_object,
                }
            )
        )
        return
    if args.callgrind:
        counts = {
            name: (
                _instructions(name, args.callgrind, priced=args.priced)
                - _instructions(name, 0, priced=args.priced)
            )
            // args.callgrind
            for name in MEASURES
        }
        print(
            json.dumps(
                {
                    "benchmark": "servicer",
                    "calls": args.callgrind,
                    "priced": args.priced,
                    "instructions_per_call": counts,
                }
            )
        )
        return
    report = asyncio.run(_measures(args.calls, args.rounds, args.only, args.priced))
    print(
        json.dumps(
            {
                "benchmark": "servicer",
                "calls": args.calls,
                "rounds": args.rounds,
                "priced": args.priced,
                "microseconds_per_call": report,
            }
        )
    )


if __name__ == "__main__":
    main()
