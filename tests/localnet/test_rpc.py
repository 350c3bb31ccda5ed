"""The localnet answers every method a real node would, in the shapes solana-py expects."""

from __future__ import annotations

import asyncio
import base64

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts, TxOpts
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from service.core.programs import STAKE_PROGRAM, SYSTEM_PROGRAM, VOTE_PROGRAM
from service.localnet import LocalnetServer
from tests._wait import until

from .conftest import RawRpc

SOL = 1_000_000_000


async def _transfer(
    client: AsyncClient, payer: Keypair, to: Pubkey, lamports: int, *, v0: bool = True
) -> VersionedTransaction:
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
    if v0:
        return VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer]
        )
    return VersionedTransaction.from_legacy(
        Transaction([payer], Message([ix], payer.pubkey()), blockhash)
    )


async def _wait_status(client: AsyncClient, signature: object, status: str) -> None:
    for _ in range(200):
        answer = (await client.get_signature_statuses([signature])).value[0]  # type: ignore[list-item]
        if answer is not None and str(answer.confirmation_status).endswith(status):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{signature} never reached {status}")


async def test_cluster_info(client: AsyncClient, raw: RawRpc, localnet: LocalnetServer) -> None:
    assert await client.is_connected()
    assert (await client.get_version()).value.solana_core
    assert (await client.get_genesis_hash()).value == localnet.chain.genesis_hash
    slot = (await client.get_slot(Processed)).value
    assert (await client.get_block_height(Processed)).value >= slot
    info = (await client.get_epoch_info(Processed)).value
    assert info.absolute_slot >= slot and info.slots_in_epoch == 432_000
    schedule = (await client.get_epoch_schedule()).value
    assert schedule.slots_per_epoch == 432_000 and not schedule.warmup
    # Commitment levels are ordered: finalized <= confirmed <= processed.
    finalized = (await client.get_slot(Finalized)).value
    confirmed = (await client.get_slot(Confirmed)).value
    processed = (await client.get_slot(Processed)).value
    assert finalized <= confirmed <= processed
    assert await raw.result("getHealth") == "ok"


async def test_slots_advance_with_wall_time(client: AsyncClient) -> None:
    first = (await client.get_slot(Processed)).value
    await asyncio.sleep(0.35)
    assert (await client.get_slot(Processed)).value >= first + 3


async def test_rent_and_minimum_delegation(client: AsyncClient, raw: RawRpc) -> None:
    assert (await client.get_minimum_balance_for_rent_exemption(200)).value == 2_282_880
    minimum = await raw.result("getStakeMinimumDelegation")
    assert minimum["value"] == SOL and "slot" in minimum["context"]


async def test_airdrop_balance_and_accounts(client: AsyncClient, raw: RawRpc) -> None:
    wallet = Keypair()
    signature = (await client.request_airdrop(wallet.pubkey(), 3 * SOL)).value
    await _wait_status(client, signature, "Confirmed")
    assert (await client.get_balance(wallet.pubkey(), Processed)).value == 3 * SOL
    account = (await client.get_account_info(wallet.pubkey(), Processed)).value
    assert account is not None and account.owner == SYSTEM_PROGRAM and account.lamports == 3 * SOL
    missing = Keypair().pubkey()
    assert (await client.get_account_info(missing)).value is None
    many = (await client.get_multiple_accounts([wallet.pubkey(), missing])).value
    assert many[0] is not None and many[0].lamports == 3 * SOL and many[1] is None
    # base58 encoding of small data, as a node accepts it.
    answer = await raw.result("getAccountInfo", str(VOTE_PROGRAM), {"encoding": "base58"})
    assert answer["value"]["data"][1] == "base58" and answer["value"]["executable"]


async def test_program_accounts_filters(client: AsyncClient, localnet: LocalnetServer) -> None:
    stakes = (await client.get_program_accounts(STAKE_PROGRAM, encoding="base64")).value
    genesis = {v.self_stake_account for v in localnet.chain.validators}
    assert genesis <= {item.pubkey for item in stakes}
    validator = localnet.chain.validators[0]
    mine = (
        await client.get_program_accounts(
            STAKE_PROGRAM,
            encoding="base64",
            filters=[200, MemcmpOpts(offset=44, bytes=str(validator.identity))],
        )
    ).value
    assert [item.pubkey for item in mine] == [validator.self_stake_account]
    votes = (
        await client.get_program_accounts(VOTE_PROGRAM, encoding="base64", filters=[3762])
    ).value
    assert len(votes) == len(localnet.chain.validators)


async def test_vote_accounts(client: AsyncClient, localnet: LocalnetServer) -> None:
    status = (await client.get_vote_accounts()).value
    validators = localnet.chain.validators
    assert len(status.current) == len(validators) - 1
    assert [v.vote_pubkey for v in status.delinquent] == [validators[-1].vote_account]
    by_vote = {v.vote_pubkey: v for v in status.current + status.delinquent}
    for validator in validators:
        entry = by_vote[validator.vote_account]
        assert entry.commission == validator.commission
        assert entry.node_pubkey == validator.identity
        # Activated stake is summed from the stake accounts delegated to it.
        assert entry.activated_stake == validator.self_stake
        assert entry.epoch_credits
    assert len({v.commission for v in status.current}) > 1
    assert len({v.activated_stake for v in status.current}) > 1


async def test_send_confirm_and_get_transaction(client: AsyncClient, funded: Keypair) -> None:
    to = Keypair().pubkey()
    for v0 in (True, False):
        tx = await _transfer(client, funded, to, SOL, v0=v0)
        signature = (await client.send_raw_transaction(bytes(tx))).value
        assert signature == tx.signatures[0]
        await _wait_status(client, signature, "Confirmed")
        got = (
            await client.get_transaction(
                signature, "json", Confirmed, max_supported_transaction_version=0
            )
        ).value
        assert got is not None and got.transaction.meta is not None
        assert got.transaction.meta.err is None and got.transaction.meta.fee == 5000
        assert got.transaction.meta.post_balances[1] - got.transaction.meta.pre_balances[1] == SOL
        b64 = (
            await client.get_transaction(
                signature, "base64", Confirmed, max_supported_transaction_version=0
            )
        ).value
        assert b64 is not None
    assert (await client.get_balance(to, Processed)).value == 2 * SOL
    # Finalized follows once the slot is 32 deep.
    await _wait_status(client, signature, "Finalized")


async def test_simulate_transaction(client: AsyncClient, funded: Keypair) -> None:
    to = Keypair().pubkey()
    tx = await _transfer(client, funded, to, SOL)
    result = (await client.simulate_transaction(tx, sig_verify=True, accounts_addresses=[to])).value
    assert result.err is None and result.units_consumed and result.logs
    assert result.accounts is not None and result.accounts[0] is not None
    assert result.accounts[0].lamports == SOL
    # Nothing happened on chain.
    assert (await client.get_balance(to, Processed)).value == 0
    replaced = (await client.simulate_transaction(tx, replace_recent_blockhash=True)).value
    assert replaced.err is None


async def test_prioritization_fees(client: AsyncClient, funded: Keypair, raw: RawRpc) -> None:
    fees: list[dict[str, int]] = []

    async def listed() -> bool:
        # The faucet's transfer to the wallet is listed once its block is confirmed.
        fees[:] = await raw.result("getRecentPrioritizationFees", [str(funded.pubkey())])
        return bool(fees)

    await until(listed, what="the airdrop's block in getRecentPrioritizationFees")
    assert all(set(item) == {"slot", "prioritizationFee"} for item in fees)
    assert len(fees) <= 150
    resp = await client.get_recent_prioritization_fees()
    assert resp.value is not None


async def test_signature_statuses_history(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    tx = await _transfer(client, funded, Keypair().pubkey(), SOL)
    signature = (await client.send_raw_transaction(bytes(tx))).value
    statuses = await raw.result(
        "getSignatureStatuses", [str(signature)], {"searchTransactionHistory": True}
    )
    assert statuses["value"][0]["err"] is None
    assert statuses["value"][0]["status"] == {"Ok": None}
    unknown = "1" * 64
    answer = await raw.result("getSignatureStatuses", [unknown])
    assert answer["value"] == [None]


async def test_signatures_for_address_newest_first(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    """getSignaturesForAddress lists what references an address (fee payer or any other
    account), newest first, paged with before/until, in the shape solana-py parses."""
    recipient = Keypair().pubkey()
    signatures = []
    for lamports in (SOL // 10, SOL // 20, SOL // 30):
        tx = await _transfer(client, funded, recipient, lamports)
        signatures.append((await client.send_raw_transaction(bytes(tx))).value)
    await _wait_status(client, signatures[-1], "Confirmed")
    listed = (await client.get_signatures_for_address(recipient, commitment=Confirmed)).value
    assert [s.signature for s in listed] == signatures[::-1]
    assert all(s.err is None and s.block_time for s in listed)
    assert listed[0].slot >= listed[-1].slot
    # The payer's list has them too, among its airdrop.
    payer = (await client.get_signatures_for_address(funded.pubkey(), limit=3)).value
    assert [s.signature for s in payer] == signatures[::-1]
    page = (
        await client.get_signatures_for_address(
            recipient, before=signatures[2], limit=1, commitment=Confirmed
        )
    ).value
    assert [s.signature for s in page] == [signatures[1]]
    newer = (
        await client.get_signatures_for_address(
            recipient, until=signatures[0], commitment=Confirmed
        )
    ).value
    assert [s.signature for s in newer] == [signatures[2], signatures[1]]
    # Processed is not a commitment this method answers at, as on a real node.
    answer = await raw.call("getSignaturesForAddress", str(recipient), {"commitment": "processed"})
    assert answer["error"]["code"] == -32602
    assert await raw.result("getSignaturesForAddress", str(Keypair().pubkey())) == []


# ----- the blockhash window --------------------------------------------------------------


async def test_recent_blockhash_lands_and_stale_is_refused(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    # Slots go on meanwhile (every 100 ms): the height is read on both sides.
    before = (await client.get_block_height(Processed)).value
    latest = (await client.get_latest_blockhash(Processed)).value
    after = (await client.get_block_height(Processed)).value
    assert before + 150 <= latest.last_valid_block_height <= after + 150
    ix = transfer(
        TransferParams(
            from_pubkey=funded.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL // 100
        )
    )
    old = VersionedTransaction(
        MessageV0.try_compile(funded.pubkey(), [ix], [], latest.blockhash), [funded]
    )
    # 100 blocks later the blockhash still lands, as on a real cluster.
    await raw.result("localnet_advanceSlots", 100)
    assert (await raw.result("isBlockhashValid", str(latest.blockhash)))["value"] is True
    await client.send_raw_transaction(bytes(old))

    stale_ix = transfer(
        TransferParams(from_pubkey=funded.pubkey(), to_pubkey=Keypair().pubkey(), lamports=2000)
    )
    stale = VersionedTransaction(
        MessageV0.try_compile(funded.pubkey(), [stale_ix], [], latest.blockhash), [funded]
    )
    await raw.result("localnet_advanceSlots", 51)
    assert (await raw.result("isBlockhashValid", str(latest.blockhash)))["value"] is False
    answer = await raw.call(
        "sendTransaction", base64.b64encode(bytes(stale)).decode(), {"encoding": "base64"}
    )
    assert answer["error"]["code"] == -32002
    assert answer["error"]["message"] == "Transaction simulation failed: Blockhash not found"
    assert answer["error"]["data"]["err"] == "BlockhashNotFound"
    with pytest.raises(RPCException):
        await client.send_raw_transaction(bytes(stale))
    # An unknown blockhash is simply not valid.
    assert (await raw.result("isBlockhashValid", str(Hash.new_unique())))["value"] is False


async def test_duplicate_is_already_processed(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    tx = await _transfer(client, funded, Keypair().pubkey(), SOL)
    encoded = base64.b64encode(bytes(tx)).decode()
    await raw.result("sendTransaction", encoded, {"encoding": "base64"})
    again = await raw.call("sendTransaction", encoded, {"encoding": "base64"})
    assert again["error"]["code"] == -32002
    assert again["error"]["data"]["err"] == "AlreadyProcessed"
    # Rebroadcast without preflight is accepted and changes nothing.
    before = (await client.get_balance(funded.pubkey(), Processed)).value
    assert await raw.result(
        "sendTransaction", encoded, {"encoding": "base64", "skipPreflight": True}
    ) == str(tx.signatures[0])
    assert (await client.get_balance(funded.pubkey(), Processed)).value == before


async def test_a_fee_payer_that_cannot_pay_is_dropped_not_recorded(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    """As a leader does: a transaction whose fee payer has no lamports is never in a
    block (no status, no fee), and the same bytes land once it is funded."""
    empty = Keypair()
    tx = await _transfer(client, empty, funded.pubkey(), 1)
    encoded = base64.b64encode(bytes(tx)).decode()
    options = {"encoding": "base64", "skipPreflight": True}
    assert await raw.result("sendTransaction", encoded, options) == str(tx.signatures[0])
    statuses = await raw.result("getSignatureStatuses", [str(tx.signatures[0])])
    assert statuses["value"] == [None]
    await client.request_airdrop(empty.pubkey(), SOL, Processed)
    await until(lambda: _funded(client, empty.pubkey()))
    await raw.result("sendTransaction", encoded, options)
    statuses = await raw.result("getSignatureStatuses", [str(tx.signatures[0])])
    assert statuses["value"][0] is not None and statuses["value"][0]["err"] is None


async def _funded(client: AsyncClient, address: Pubkey) -> bool:
    return (await client.get_balance(address, Processed)).value > 0


# ----- error shapes ------------------------------------------------------------------------


async def test_preflight_failure_carries_logs(
    client: AsyncClient, funded: Keypair, raw: RawRpc
) -> None:
    tx = await _transfer(client, funded, Keypair().pubkey(), 10_000 * SOL)
    answer = await raw.call(
        "sendTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}
    )
    error = answer["error"]
    assert error["code"] == -32002
    assert error["message"] == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert error["data"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert any("insufficient lamports" in line for line in error["data"]["logs"])
    # solana-py surfaces the same failure as its typed preflight error.
    with pytest.raises(RPCException) as caught:
        await client.send_raw_transaction(bytes(tx))
    assert "SendTransactionPreflightFailure" in repr(caught.value.args[0])
    # Without preflight the failure lands: the fee is paid, the status carries the error.
    before = (await client.get_balance(funded.pubkey(), Processed)).value
    signature = (await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))).value
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None and status.err is not None
    assert (await client.get_balance(funded.pubkey(), Processed)).value == before - 5000


async def test_bad_signature(client: AsyncClient, funded: Keypair, raw: RawRpc) -> None:
    tx = await _transfer(client, funded, Keypair().pubkey(), SOL)
    forged = VersionedTransaction.populate(tx.message, [Keypair().sign_message(b"x")])
    answer = await raw.call(
        "sendTransaction", base64.b64encode(bytes(forged)).decode(), {"encoding": "base64"}
    )
    assert answer["error"]["code"] == -32003
    assert answer["error"]["message"] == "Transaction signature verification failure"


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("getBalance", ["not-a-key"], -32602),
        ("getBalance", ["1111"], -32602),
        ("getBalance", [], -32602),
        ("getAccountInfo", [str(SYSTEM_PROGRAM), {"encoding": "nope"}], -32602),
        ("getMinimumBalanceForRentExemption", [-1], -32602),
        ("sendTransaction", ["%%%", {"encoding": "base64"}], -32602),
        (
            "sendTransaction",
            [base64.b64encode(b"\x01" * 10).decode(), {"encoding": "base64"}],
            -32602,
        ),
        ("getSlot", [{"commitment": "sideways"}], -32602),
        ("getSlot", [{"minContextSlot": 2**60}], -32016),
        ("noSuchMethod", [], -32601),
    ],
)
async def test_error_codes(raw: RawRpc, method: str, params: list[object], code: int) -> None:
    answer = await raw.call(method, *params)
    assert answer["jsonrpc"] == "2.0" and answer["id"] == 1
    assert answer["error"]["code"] == code, answer
    assert isinstance(answer["error"]["message"], str)


async def test_unknown_method_shape(raw: RawRpc) -> None:
    answer = await raw.call("getNothing")
    assert answer == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found"},
        "id": 1,
    }


async def test_parse_error_and_batches(raw: RawRpc, localnet: LocalnetServer) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(localnet.url, data=b"{not json") as response,
    ):
        body = await response.json()
    assert body["error"]["code"] == -32700
    batch = await raw.post(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
            {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        ]
    )
    assert [item["id"] for item in batch] == [1, 2]
    assert "result" in batch[0] and batch[1]["error"]["code"] == -32601


async def test_concurrent_requests(client: AsyncClient, funded: Keypair) -> None:
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    txs = [
        VersionedTransaction(
            MessageV0.try_compile(
                funded.pubkey(),
                [
                    transfer(
                        TransferParams(
                            from_pubkey=funded.pubkey(),
                            to_pubkey=Keypair().pubkey(),
                            lamports=SOL // 100 + i,
                        )
                    )
                ],
                [],
                blockhash,
            ),
            [funded],
        )
        for i in range(50)
    ]
    sent, balances = await asyncio.gather(
        asyncio.gather(*(client.send_raw_transaction(bytes(tx)) for tx in txs)),
        asyncio.gather(*(client.get_balance(funded.pubkey()) for _ in range(50))),
    )
    assert {r.value for r in sent} == {tx.signatures[0] for tx in txs}
    assert all(b.value > 0 for b in balances)


def test_an_epoch_jump_leaves_recent_blockhashes_their_blocks() -> None:
    """advance_epochs is a jump, not elapsed blocks: a blockhash a client fetched just
    before it still lands after it (as many blocks left as it had); blocks produced
    after the jump do expire it."""
    from service.localnet import LocalnetChain, LocalnetConfig
    from service.localnet._chain import MAX_PROCESSING_AGE

    chain = LocalnetChain(LocalnetConfig(slot_duration=0))
    chain.advance_slots(10)
    blockhash, last_valid = chain.latest_blockhash("processed")
    left = last_valid - chain.block_height
    chain.advance_epochs(2)
    assert chain.is_blockhash_valid(str(blockhash))
    chain.advance_slots(left)
    assert chain.is_blockhash_valid(str(blockhash))
    chain.advance_slots(1)
    assert not chain.is_blockhash_valid(str(blockhash))
    assert left <= MAX_PROCESSING_AGE
