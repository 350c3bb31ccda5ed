"""A wallet on the command line, for trying agent-staking by hand (the README's
walk-through): the agent's side, on the agent's machine. The service never sees the key.

    python examples/wallet.py new wallet.json      # a keypair file; prints its address
    python examples/wallet.py address wallet.json  # prints the address again
    grpcurl ... BuildStakeTransaction | python examples/wallet.py sign wallet.json \\
        | grpcurl -d @ ... SubmitTransaction

`sign` reads a Build*Transaction response as grpcurl prints it (JSON), checks that the
message to sign is the transaction's and that the wallet must sign it, tells on stderr
what the transaction does, and prints a SubmitTransaction request (JSON) with the signed
transaction. The keypair file is the Solana CLI's format (a JSON array of 64 bytes).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.transaction import VersionedTransaction


def _load(path: Path) -> Keypair:
    return Keypair.from_bytes(bytes(json.loads(path.read_text())))


def new(path: Path) -> int:
    if path.exists():
        print(f"{path} exists: not overwriting a key", file=sys.stderr)
        return 1
    keypair = Keypair()
    path.write_text(json.dumps(list(bytes(keypair))))
    path.chmod(0o600)
    print(keypair.pubkey())
    return 0


def sign(path: Path, built: dict[str, object]) -> int:
    keypair = _load(path)
    prepared = built.get("transaction")
    if not isinstance(prepared, dict):
        print("stdin is not a Build*Transaction response (no `transaction`)", file=sys.stderr)
        return 1
    unsigned = VersionedTransaction.from_bytes(base64.b64decode(prepared["transaction"]))
    message = base64.b64decode(prepared["message"])
    if to_bytes_versioned(unsigned.message) != message:
        print("the message to sign is not the transaction's message: not signing", file=sys.stderr)
        return 1
    signers = prepared.get("requiredSigners") or prepared.get("required_signers") or []
    if str(keypair.pubkey()) not in signers:
        print(f"{keypair.pubkey()} is not a required signer ({signers})", file=sys.stderr)
        return 1
    for instruction in prepared.get("instructions", []):
        print(f"  {instruction.get('description', instruction.get('type'))}", file=sys.stderr)
    fees = prepared.get("fees", {})
    print(f"  total debit: {fees.get('totalDebitLamports', '?')} lamports", file=sys.stderr)
    signed = VersionedTransaction(unsigned.message, [keypair])
    print(
        json.dumps(
            {
                "transaction": base64.b64encode(bytes(signed)).decode(),
                "commitment": "COMMITMENT_CONFIRMED",
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("new", "address", "sign"):
        commands.add_parser(name).add_argument("keypair", type=Path, help="keypair file")
    args = parser.parse_args(argv)
    if args.command == "new":
        return new(args.keypair)
    if args.command == "address":
        print(_load(args.keypair).pubkey())
        return 0
    text = sys.stdin.read()
    if not text.strip():
        print("nothing on stdin: the build before the pipe failed (see above)", file=sys.stderr)
        return 1
    return sign(args.keypair, json.loads(text))


if __name__ == "__main__":
    sys.exit(main())
