"""The receipt key file: generation, rotation with overlap, reload, and its checks."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from service.core.receipts import key_id_for, signature_valid
from service.receipts import (
    KeyRing,
    KeyStatus,
    ReceiptKeyFileError,
    ReceiptSigner,
    ensure_key_file,
    public_view,
    read_key_file,
    write_key_file,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_generated_file_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "receipt-keys.json"
    ring, created = ensure_key_file(path, now=NOW)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = ring.keys
    assert key.status is KeyStatus.ACTIVE and key.key_id == key_id_for(key.public_key)
    signature = key.sign(b"hello")
    VerifyKey(key.public_key).verify(b"hello", signature)
    again, created = ensure_key_file(path, now=NOW + timedelta(days=1))
    assert not created and again.active.key_id == key.key_id
    assert again.active.sign(b"hello") == signature  # Ed25519 is deterministic
    # The published view has no private part.
    view = public_view(again.keys)
    assert "private_key" not in json.dumps(view)
    assert view[0]["public_key"] == base64.b64encode(key.public_key).decode()


def test_signatures_are_those_of_every_ed25519_implementation(tmp_path: Path) -> None:
    """The file's seed signs as OpenSSL's Ed25519 does, byte for byte (Ed25519 is
    deterministic), and solders' own check accepts it."""
    path = tmp_path / "receipt-keys.json"
    ring, _ = ensure_key_file(path, now=NOW)
    seed = base64.b64decode(json.loads(path.read_text())["keys"][0]["private_key"])
    openssl = Ed25519PrivateKey.from_private_bytes(seed)
    for text in ("", "{}", os.urandom(700).hex()):  # a receipt is some 1,400 bytes
        signature = ring.active.sign(text.encode())
        assert signature == openssl.sign(text.encode())
        assert signature_valid(payload=text, signature=signature, public_key=ring.active.public_key)


def test_only_one_creator_wins(tmp_path: Path) -> None:
    path = tmp_path / "receipt-keys.json"
    first, second = KeyRing.generate(NOW), KeyRing.generate(NOW)
    assert write_key_file(path, first, exclusive=True)
    assert not write_key_file(path, second, exclusive=True)
    assert read_key_file(path).active.key_id == first.active.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["receipt-keys.json"]  # no temporary left


def test_rotation_keeps_old_keys_published_without_their_private_key(tmp_path: Path) -> None:
    ring = KeyRing.generate(NOW)
    old = ring.active
    staged = ring.stage(NOW + timedelta(days=1))
    assert staged.stage(NOW + timedelta(days=2)) == staged  # one next key at most
    (next_key,) = [k for k in staged.keys if k.status is KeyStatus.NEXT]
    assert staged.active.key_id == old.key_id  # staging does not change who signs
    rotated = staged.rotate(NOW + timedelta(days=3))
    assert rotated.active.key_id == next_key.key_id
    (retired,) = [k for k in rotated.keys if k.status is KeyStatus.RETIRED]
    assert retired.key_id == old.key_id and retired.private_key is None
    assert retired.retire_time == NOW + timedelta(days=3)
    with pytest.raises(ValueError, match="no private key"):
        retired.sign(b"x")
    path = tmp_path / "keys.json"
    write_key_file(path, rotated.rotate(NOW + timedelta(days=4)))
    text = path.read_text()
    back = read_key_file(path)
    assert [k.status for k in back.keys] == [KeyStatus.ACTIVE, KeyStatus.RETIRED, KeyStatus.RETIRED]
    assert text.count("private_key") == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda v: v.update(keys=[]), "not empty"),
        (lambda v: v["keys"][0].update(status="signing"), "status must be one of"),
        (lambda v: v["keys"][0].update(key_id="rk_0000000000000000"), "is not its key's id"),
        (lambda v: v["keys"][0].pop("private_key"), "needs its private_key"),
        (lambda v: v["keys"][0].update(public_key="AAAA"), "must be 32 bytes"),
        (lambda v: v["keys"][0].update(create_time="yesterday"), "not an RFC 3339 time"),
        (lambda v: v["keys"][0].update(status="retired"), "exactly one active key"),
        (lambda v: v["keys"].append(dict(v["keys"][0])), "exactly one active key"),
    ],
)
def test_inconsistent_files_are_refused_with_a_reason(
    tmp_path: Path, edit: object, message: str
) -> None:
    path = tmp_path / "keys.json"
    value = KeyRing.generate(NOW).to_json()
    edit(value)  # type: ignore[operator]
    path.write_text(json.dumps(value))
    with pytest.raises(ReceiptKeyFileError, match=message) as caught:
        read_key_file(path)
    assert 'private_key": "' not in str(caught.value)


def test_a_private_key_of_another_public_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    value = KeyRing.generate(NOW).to_json()
    value["keys"][0]["private_key"] = KeyRing.generate(NOW).to_json()["keys"][0]["private_key"]
    path.write_text(json.dumps(value))
    with pytest.raises(ReceiptKeyFileError, match="does not match"):
        read_key_file(path)


def test_missing_configured_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReceiptKeyFileError, match="does not exist"):
        ReceiptSigner(tmp_path / "absent.json", create=False, now=NOW)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReceiptKeyFileError, match="not JSON"):
        ReceiptSigner(tmp_path / "bad.json", create=False, now=NOW)


def test_signer_reloads_a_replaced_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ticks = Ticks()
    signer = ReceiptSigner(path, create=True, now=NOW, check_interval=5, clock=ticks)
    assert signer.created
    first = signer.signing_key().key_id
    write_key_file(path, read_key_file(path).rotate(NOW))
    os.utime(path, ns=(1, 1))  # a different modification time however fast the test runs
    assert signer.signing_key().key_id == first  # not looked at before the interval
    ticks.now = 5.0
    rotated = signer.signing_key().key_id
    assert rotated != first
    assert {k.key_id for k in signer.published()} == {first, rotated}
    # A broken replacement: the previous keys stay in use.
    path.write_text("{ half written")
    ticks.now = 10.0
    assert signer.signing_key().key_id == rotated
