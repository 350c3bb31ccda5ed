"""Rate limiting: each call is charged to its API key, its wallet, or its peer.

Runs inside the auth interceptor's wrapper (so after authentication, with the
principal set) and after deserialization (so it sees the request):

- an authenticated call is charged to its **API key** (the key policy's
  ``rate_limit``, else the operator's default) and, when it names a wallet, to that
  **wallet** (the ``wallet`` field of builds and reads, the fee payer of the signed
  transaction of SubmitTransaction): changing keys does not reset a wallet's limit;
- a call to an open service (reflection) is charged to its **peer** address;
- a failed authentication is charged to its peer by :class:`PeerAuthFailures`, the
  auth interceptor's ``failures`` hook, which also refuses calls from a peer over
  its budget before their key is checked (this slows down key guessing), except calls
  whose key id is known to exist: an attacker behind the same address (one ingress,
  one NAT) as valid clients does not lock them out. The bound: a peer's key guesses
  cost at most its budget of database reads (an unknown key id is then remembered as
  unknown for the key cache TTL), whatever it sends.

The peer is the address of the TCP connection (``context.peer()``, without the port;
IPv6 by /64 network): forwarding headers are never trusted. Answers carry
``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` for the most
constraining bucket in their trailers, served or refused (RESOURCE_EXHAUSTED with
RetryInfo and QuotaFailure); streaming responses also in their initial metadata.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, NoReturn
from urllib.parse import unquote

import grpc
from agentstaking.v1 import staking_pb2
from google.protobuf.message import Message
from solders.pubkey import Pubkey

from service.api import abort_with, current_principal, status_for
from service.core.errors import DomainError
from service.core.verify import parse_wire_transaction
from service.keys import AuthenticationError
from service.ratelimit import (
    Decision,
    Dimension,
    Limit,
    RateLimitedError,
    RateLimiter,
    RateLimiterUnavailableError,
    RpcClass,
    Subject,
    classify,
    headers,
)
from service.telemetry import note_rate_limited, note_wallet

from ._chain import Stage
from ._observe import add_response_metadata
from ._wrap import Context, wrap_handler

log = logging.getLogger(__name__)


class RateLimitInterceptor(Stage):
    """Charges every call to its buckets; refuses it with RESOURCE_EXHAUSTED when over.

    Args:
        limiter: The limiter (its policy says the limits).
        admin_services: Full service names whose methods are of the ``admin`` class.
        exempt_services: Full service names never limited (health checks).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        admin_services: Collection[str] = (),
        exempt_services: Collection[str] = (),
    ) -> None:
        self._limiter = limiter
        self._admin = frozenset(admin_services)
        self._exempt = frozenset(exempt_services)

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if service in self._exempt:
            return handler
        rpc_class = classify(method, admin=service in self._admin)

        async def limited(request: Any, context: Context) -> None:
            await self._check(request, context, rpc_class)

        return wrap_handler(handler, limited)

    async def _check(self, request: Any, context: Context, rpc_class: RpcClass) -> None:
        subjects = self._subjects(request, context, rpc_class)
        if not subjects:
            return
        try:
            verdict = await self._limiter.check(subjects)
        except RateLimiterUnavailableError as exc:
            await abort_with(context, status_for(exc))
        if not verdict.allowed:
            subject, _ = verdict.binding
            note_rate_limited(subject.dimension.value, subject.rpc_class.value)
            await abort_with(context, status_for(verdict.error()), verdict.headers())
        # With the status, not a send of their own (see `add_response_metadata`).
        add_response_metadata(context, verdict.headers())

    def _subjects(self, request: Any, context: Context, rpc_class: RpcClass) -> list[Subject]:
        policy = self._limiter.policy
        principal = current_principal.get()
        subjects: list[Subject] = []

        def add(dimension: Dimension, identity: str, limit: Limit | None) -> None:
            if limit is not None:
                subjects.append(
                    Subject(
                        dimension=dimension, identity=identity, rpc_class=rpc_class, limit=limit
                    )
                )

        if principal is None:
            # Only open services get here: the auth interceptor refused everything else.
            peer = peer_address(context.peer())
            add(Dimension.PEER, peer, policy.limit(Dimension.PEER, rpc_class))
            return subjects
        override = principal.policy.rate_limit
        add(
            Dimension.KEY,
            principal.key_id,
            policy.limit(
                Dimension.KEY,
                rpc_class,
                per_minute=override.requests_per_minute if override else 0,
                burst=override.burst if override else 0,
            ),
        )
        wallet = wallet_of(request)
        if wallet is not None:
            note_wallet(wallet)
            add(Dimension.WALLET, wallet, policy.limit(Dimension.WALLET, rpc_class))
        return subjects


class PeerAuthFailures:
    """Failed authentications per peer: the auth interceptor's ``failures`` hook.

    Each failed authentication is charged to the peer's ``auth_failures`` bucket (the
    peer limit); the failure is answered UNAUTHENTICATED as usual while the bucket has
    room, RESOURCE_EXHAUSTED once it has none. While a peer's bucket is empty, its calls
    are refused before their key is checked (remembered per replica until the bucket's
    next token; the bucket itself is shared through Redis), except those presenting a
    key id known to exist, which are authenticated as usual.
    """

    def __init__(
        self, limiter: RateLimiter, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self._blocked: dict[str, tuple[float, Subject, Decision]] = {}

    async def admit(self, context: Context, *, known_key: Callable[[], bool]) -> None:
        if not self._blocked:
            return
        peer = peer_address(context.peer())
        blocked = self._blocked.get(peer)
        if blocked is None or known_key():
            return
        until, subject, last = blocked
        now = self._clock()
        if now >= until:
            del self._blocked[peer]
            return
        waited = now - (until - last.retry_after)
        decision = Decision(
            allowed=False,
            limit=last.limit,
            remaining=0,
            reset_after=max(0.0, last.reset_after - waited),
            retry_after=until - now,
        )
        await _refuse(context, subject, decision)

    async def failed(self, context: Context, error: AuthenticationError) -> NoReturn:
        peer = peer_address(context.peer())
        limit = self._limiter.policy.limit(Dimension.PEER, RpcClass.AUTH_FAILURES)
        if limit is None:
            await abort_with(context, status_for(error))
        subject = Subject(
            dimension=Dimension.PEER, identity=peer, rpc_class=RpcClass.AUTH_FAILURES, limit=limit
        )
        try:
            verdict = await self._limiter.check([subject])
        except RateLimiterUnavailableError:
            # Refused anyway: the authentication failed.
            await abort_with(context, status_for(error))
        decision = verdict.decisions[0]
        if decision.retry_after > 0:
            self._block(peer, subject, decision)
        if not verdict.allowed:
            await _refuse(context, subject, decision)
        await abort_with(context, status_for(error), headers(decision))

    def _block(self, peer: str, subject: Subject, decision: Decision) -> None:
        now = self._clock()
        if len(self._blocked) >= 10_000:  # bounded: drop the expired entries
            for key in [k for k, (until, _, _) in self._blocked.items() if until <= now]:
                del self._blocked[key]
        self._blocked[peer] = (now + decision.retry_after, subject, decision)


async def _refuse(context: Context, subject: Subject, decision: Decision) -> NoReturn:
    note_rate_limited(subject.dimension.value, subject.rpc_class.value)
    error = RateLimitedError(
        dimension=subject.dimension.value,
        subject=subject.identity,
        rpc_class=subject.rpc_class.value,
        limit=subject.limit,
        retry_after=decision.retry_after,
    )
    await abort_with(context, status_for(error), headers(decision))


def peer_address(peer: str) -> str:
    """The client's address from ``context.peer()``: IP without the port; IPv6 as its /64
    network (one host holds a whole /64); ``unix`` for Unix sockets."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]").split("%")[0]
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host or "unknown"
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return kind or "unknown"


def wallet_of(request: Any) -> str | None:
    """The wallet a request acts for: its ``wallet`` field (builds, ListStakeAccounts), or
    the fee payer of SubmitTransaction's signed transaction; None when there is none or
    it is malformed (the servicer then refuses the request)."""
    if isinstance(request, staking_pb2.SubmitTransactionRequest):
        try:
            tx = parse_wire_transaction(request.transaction)
        except DomainError:
            return None
        return str(tx.message.account_keys[0])
    if not isinstance(request, Message) or "wallet" not in request.DESCRIPTOR.fields_by_name:
        return None
    wallet = getattr(request, "wallet", None)
    if not isinstance(wallet, str) or not 32 <= len(wallet) <= 44:
        return None
    try:
        return str(Pubkey.from_string(wallet))
    except ValueError:
        return None
