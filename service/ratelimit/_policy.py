"""Which limits apply: dimensions, RPC classes, the operator's defaults and per-key overrides."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._gcra import Limit


class Dimension(enum.Enum):
    """Who a bucket counts the calls of."""

    KEY = "api_key"
    WALLET = "wallet"
    PEER = "peer"

    # Members are singletons compared by identity: hashed by it too (Enum's own hash is
    # a Python call on the name, and these key dicts on every call).
    __hash__ = object.__hash__


class RpcClass(enum.Enum):
    """Kinds of calls; each has buckets of its own, its limits scaled by its factor."""

    BUILDS = "builds"
    """Build*Transaction."""
    SUBMITS = "submits"
    """SubmitTransaction, and the calls that change a webhook or make the service send
    one (Create*, Update*, Delete*, Rotate*, SendTestEvent)."""
    READS = "reads"
    """Get*, List*, Watch* and the open services (reflection)."""
    ADMIN = "admin"
    """KeyService."""
    AUTH_FAILURES = "auth_failures"
    """Failed authentications (peer dimension only; never scaled)."""

    __hash__ = object.__hash__  # as Dimension's


# Calls of the events API that write, or make the service send (a test event): as
# costly for the service as a submission.
_WRITES = ("Create", "Update", "Delete", "Rotate", "Send")


def classify(method: str, *, admin: bool = False) -> RpcClass:
    """The class of an RPC by its method name (``admin``: a KeyService method)."""
    if admin:
        return RpcClass.ADMIN
    if method.startswith("Build"):
        return RpcClass.BUILDS
    if method == "SubmitTransaction" or method.startswith(_WRITES):
        return RpcClass.SUBMITS
    return RpcClass.READS


@dataclass(frozen=True)
class Tier:
    """A default limit as configured: per minute (0 turns the dimension off) and burst."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.burst < 0:
            raise ValueError(f"rate limits cannot be negative: {self}")


DEFAULT_FACTORS: Mapping[RpcClass, float] = {
    RpcClass.BUILDS: 1.0,
    RpcClass.SUBMITS: 1.0,
    RpcClass.READS: 3.0,
    RpcClass.ADMIN: 0.1,
}


@dataclass(frozen=True, kw_only=True)
class RateLimitPolicy:
    """The operator's limits.

    Attributes:
        key: Per API key (a key's policy may override either number).
        wallet: Per wallet, for builds, submits and reads that name a wallet.
        peer: Per peer address, for calls to open services and failed authentications.
        factors: Per RPC class, multiplies the rate and the burst of every dimension.
    """

    key: Tier
    wallet: Tier
    peer: Tier
    factors: Mapping[RpcClass, float] = field(default_factory=lambda: dict(DEFAULT_FACTORS))
    _limits: dict[tuple[Dimension, RpcClass, int, int], Limit | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """What :meth:`limit` answered, by its arguments (asked on every call)."""

    def __post_init__(self) -> None:
        for rpc_class, factor in self.factors.items():
            if not factor > 0:
                raise ValueError(f"the {rpc_class.value} factor must be positive, got {factor}")

    def limit(
        self,
        dimension: Dimension,
        rpc_class: RpcClass,
        *,
        per_minute: int = 0,
        burst: int = 0,
    ) -> Limit | None:
        """The limit of one bucket, None when the dimension is off.

        Args:
            dimension: The bucket's dimension.
            rpc_class: The call's class.
            per_minute: Override of the default rate (a key's policy); 0: the default.
            burst: Override of the default burst (a key's policy); 0: the default.
        """
        arguments = (dimension, rpc_class, per_minute, burst)
        try:
            return self._limits[arguments]
        except KeyError:
            pass
        tier = {Dimension.KEY: self.key, Dimension.WALLET: self.wallet, Dimension.PEER: self.peer}[
            dimension
        ]
        rate = per_minute or tier.per_minute
        limit = None
        if rate != 0:
            base = Limit(per_minute=rate, burst=burst or tier.burst or rate)
            limit = base.scaled(self.factors.get(rpc_class, 1.0))
        if len(self._limits) < 10_000:  # key policies' overrides are few; stay bounded
            self._limits[arguments] = limit
        return limit
