"""Receipts as agents and operators meet them: every Build* RPC goes through the one
gate that signs them; the docs' Python and TypeScript verifications run as written
(TypeScript compiled with tsc, run with node) on what the real grpcurl saved; the
`receipt-key` and `verify-receipt` commands; the key file of the embedded default."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agentstaking.v1 import staking_pb2
from google.protobuf import json_format, message_factory
from solders.keypair import Keypair

from service.api import BUILD_RPC_MARK, StakingServicer
from service.config import Settings
from service.localnet import LocalnetServer
from service.receipts import ReceiptKeyFileError
from service.server import AgentStakingServer
from tests._require import unavailable
from tests.lifecycle.test_stake_management_grpcurl import _grpcurl as grpcurl

from .conftest import Service

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "intents.md").read_text()
SERVICE = staking_pb2.DESCRIPTOR.services_by_name["StakingService"]
TYPESCRIPT = ROOT / "examples" / "typescript"
EXAMPLE = re.compile(
    r"grpcurl -plaintext -H \"authorization: Bearer \$KEY\" -d '(\{.*?\})' "
    r"(\S+) agentstaking\.v1\.StakingService/(\w+)",
    re.DOTALL,
)


def _block(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", DOC, re.DOTALL)
    assert found is not None, f"no {language} block in docs/intents.md"
    return found.group(1)


def test_every_build_rpc_goes_through_the_gate() -> None:
    """A Build* RPC added without the gate (no receipt, no intent) fails here."""
    builds = [m.name for m in SERVICE.methods if m.name.startswith("Build")]
    assert len(builds) >= 12
    for name in builds:
        method = getattr(StakingServicer, name)
        assert getattr(method, BUILD_RPC_MARK, None) == name, f"{name} skips the gate"
    others = [m.name for m in SERVICE.methods if not m.name.startswith("Build")]
    assert not [n for n in others if hasattr(getattr(StakingServicer, n), BUILD_RPC_MARK)]


def test_the_guides_grpcurl_examples_are_valid_requests() -> None:
    examples = EXAMPLE.findall(DOC)
    assert {m for _, _, m in examples} == {
        "BuildStakeTransaction",
        "GetNetworkInfo",
        "GetIntent",
        "BuildNonceAccountTransaction",
    }
    for body, _, method in examples:
        request = message_factory.GetMessageClass(SERVICE.methods_by_name[method].input_type)()
        json_format.Parse(body.replace("<your wallet address>", "W"), request)


def _call(address: str, key: str, method: str, body: str) -> str:
    done = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {key}",
        "-d",
        body,
        address,
        f"agentstaking.v1.StakingService/{method}",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _saved(service: Service, wallet: Keypair, tmp_path: Path) -> tuple[Path, Path]:
    """built.json and network.json, as the guide's grpcurl commands save them."""
    values = {"<your wallet address>": str(wallet.pubkey())}
    saved = {}
    for body, _, method in EXAMPLE.findall(DOC)[:2]:
        for placeholder, value in values.items():
            body = body.replace(placeholder, value)
        body = body.replace('"order-42"', f'"{wallet.pubkey()}-42"')
        text = await asyncio.to_thread(_call, service.address, service.staking_secret, method, body)
        saved[method] = tmp_path / f"{method}.json"
        saved[method].write_text(text)
    return saved["BuildStakeTransaction"], saved["GetNetworkInfo"]


def _tampered(built: Path, tmp_path: Path) -> Path:
    value = json.loads(built.read_text())
    payload = json.loads(value["transaction"]["receipt"]["payload"])
    payload["fees"]["total_debit_lamports"] = "1"
    value["transaction"]["receipt"]["payload"] = json.dumps(
        payload, sort_keys=True, separators=(",", ":")
    )
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(value))
    return path


async def test_the_python_verification_of_the_guide(
    service: Service, wallet: Keypair, tmp_path: Path
) -> None:
    built, network = await _saved(service, wallet, tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(_block("python"), "docs/intents.md", "exec"), scope)
    verify = scope["verify_receipt"]
    keys = json.loads(network.read_text())["receiptKeys"]
    payload = verify(json.loads(built.read_text())["transaction"], keys)
    assert payload["kind"] == "BuildStakeTransaction" and payload["wallet"] == str(wallet.pubkey())
    from nacl.exceptions import BadSignatureError

    with pytest.raises(BadSignatureError):
        verify(json.loads(_tampered(built, tmp_path).read_text())["transaction"], keys)
    other = json.loads(built.read_text())["transaction"]
    other["message"] = other["transaction"]  # not the message the receipt is for
    with pytest.raises(AssertionError):
        verify(other, keys)


def _compile(tsc: Path, source: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(tsc),
            "--strict",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--typeRoots",
            str(TYPESCRIPT / "node_modules" / "@types"),
            "--types",
            "node",
            "--outDir",
            str(source),
            str(source / "verify.ts"),
            str(source / "main.ts"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


DRIVER = """
import { readFileSync } from "node:fs";
import { verifyReceipt } from "./verify.js";

const [built, network] = process.argv.slice(2).map((p) => JSON.parse(readFileSync(p, "utf8")));
try {
  const claims = verifyReceipt(built.transaction, network.receiptKeys);
  console.log(JSON.stringify({ ok: true, kind: claims.kind }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
}
"""


async def test_the_typescript_verification_of_the_guide(
    service: Service, wallet: Keypair, tmp_path: Path
) -> None:
    node = shutil.which("node")
    tsc = TYPESCRIPT / "node_modules" / ".bin" / "tsc"
    if node is None or not tsc.exists():
        unavailable("node or examples/typescript/node_modules is missing (npm ci)")
    built, network = await _saved(service, wallet, tmp_path)
    source = tmp_path / "ts"
    source.mkdir()
    (source / "verify.ts").write_text(_block("typescript"))
    (source / "main.ts").write_text(DRIVER)
    (source / "package.json").write_text('{"type": "module"}')
    compiled = await asyncio.to_thread(_compile, tsc, source)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    def run(document: Path) -> dict[str, Any]:
        done = subprocess.run(
            [node, str(source / "main.js"), str(document), str(network)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    assert run(built) == {"ok": True, "kind": "BuildStakeTransaction"}
    refused = run(_tampered(built, tmp_path))
    assert refused["ok"] is False and "forged receipt" in refused["error"]


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


async def test_receipt_key_and_verify_receipt_commands(
    service: Service, wallet: Keypair, tmp_path: Path
) -> None:
    built, network = await _saved(service, wallet, tmp_path)
    key_file = str(service.server.settings.receipt_key_path)
    code, listed, _ = await asyncio.to_thread(_cli, "receipt-key", "--key-file", key_file)
    assert code == 0
    published = json.loads(network.read_text())["receiptKeys"]
    assert [(k["key_id"], k["public_key"]) for k in listed["receipt_keys"]] == [
        (k["keyId"], k["publicKey"]) for k in published
    ]
    assert "private_key" not in json.dumps(listed)
    for keys in (["--key-file", key_file], ["--keys", str(network)]):
        code, verdict, _ = await asyncio.to_thread(_cli, "verify-receipt", str(built), *keys)
        assert code == 0 and verdict["valid"] is True, verdict
        assert verdict["checks"] == {
            "key_published": True,
            "signature": True,
            "payload": True,
            "message_sha256": True,
        }
        assert verdict["payload"]["wallet"] == str(wallet.pubkey())
    code, verdict, _ = await asyncio.to_thread(
        _cli, "verify-receipt", str(_tampered(built, tmp_path)), "--keys", str(network)
    )
    assert code == 1 and verdict["valid"] is False and verdict["checks"]["signature"] is False
    # Just the receipt, against keys that do not include its own.
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(json.loads(built.read_text())["transaction"]["receipt"]))
    foreign = tmp_path / "foreign-keys.json"
    code, _, _ = await asyncio.to_thread(
        _cli, "receipt-key", "--key-file", str(foreign), "--rotate"
    )
    assert code == 0
    code, verdict, _ = await asyncio.to_thread(
        _cli, "verify-receipt", str(receipt), "--key-file", str(foreign)
    )
    assert code == 1 and verdict["checks"]["key_published"] is False
    assert verdict["checks"]["message_sha256"] is None  # no message saved with it
    code, _, err = await asyncio.to_thread(_cli, "verify-receipt", str(network))
    assert code == 1 and "holds no receipt" in err


async def test_the_embedded_default_generates_its_keys_once(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    """No key file configured: the first start writes one in the data directory (mode
    0600), the next start signs with the same key; a configured file must exist."""
    settings = Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        service_fee_bps=0,
        data_dir=tmp_path / "data",
        shutdown_grace_seconds=1,
    )
    key_ids = []
    for _ in range(2):
        server = AgentStakingServer(settings)
        await server.start()
        assert server.receipts is not None
        key_ids.append(server.receipts.signing_key().key_id)
        await server.stop(0)
    path = tmp_path / "data" / "receipt-keys.json"
    assert key_ids[0] == key_ids[1] and path.stat().st_mode & 0o777 == 0o600
    missing = settings.model_copy(update={"receipt_key_file": tmp_path / "secret" / "keys.json"})
    server = AgentStakingServer(missing)
    with pytest.raises(ReceiptKeyFileError, match="does not exist"):
        await server.start()
    await server.stop(0)
