"""Configuration: one `Settings` object, built once at start and passed down.

Sources, strongest first: command-line flags, `AGENT_STAKING_*` environment
variables, the optional TOML file (`--config` or `AGENT_STAKING_CONFIG_FILE`),
the defaults below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from solders.pubkey import Pubkey

ENV_PREFIX = "AGENT_STAKING_"

SERVE_FLAGS: Final[dict[str, str]] = {
    "listen": "--listen",
    "rpc_urls": "--rpc-url",
    "metrics_listen": "--metrics-listen",
    "workers": "--workers",
    "tls_cert_file": "--tls-cert",
    "tls_key_file": "--tls-key",
    "tls_client_ca_file": "--tls-client-ca",
    "localnet_listen": "--localnet-listen",
}
"""Settings that `serve` also takes as flags (a flag beats the environment)."""
# Configured stake pools are read a page at a time with getMultipleAccounts (at most
# 100 accounts per call on public nodes); more than this many pools is a mistake.
MAX_STAKE_POOLS = 50


class StakePoolSetting(BaseModel):
    """One SPL stake pool offered for liquid staking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    """The pool's StakePool account (base58)."""
    label: str = Field(default="", max_length=64)
    """A name for people, e.g. `JitoSOL`."""

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        Pubkey.from_string(value)
        return value


def _parse_stake_pools(value: Any) -> Any:
    """`AGENT_STAKING_STAKE_POOLS` as JSON (a list of `{"address", "label"}` objects, or
    an object mapping addresses to labels) or as text: entries separated by commas,
    each `LABEL=ADDRESS`, `ADDRESS=LABEL` or a bare `ADDRESS`."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text[0] in "[{":
        value = json.loads(text)
        if isinstance(value, dict):
            return [{"address": a, "label": label} for a, label in value.items()]
        return value
    pools = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        left, sep, right = (part.strip() for part in entry.partition("="))
        if not sep:
            pools.append({"address": left})
        elif _is_address(left):
            pools.append({"address": left, "label": right})
        else:
            pools.append({"address": right, "label": left})
    return pools


def _is_address(text: str) -> bool:
    try:
        Pubkey.from_string(text)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Every setting of the service; environment names are `AGENT_STAKING_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, use_attribute_docstrings=True
    )

    listen: str = "127.0.0.1:50051"
    """gRPC listen address, HOST:PORT (port 0 picks a free port)."""
    workers: int = Field(default=1, ge=1, le=256)
    """Server processes sharing the gRPC port (SO_REUSEPORT); above 1 the port must be
    concrete (not 0) and the metrics of the workers are merged (PROMETHEUS_MULTIPROC_DIR)."""
    rpc_urls: list[str] = Field(default_factory=list)
    """Solana JSON-RPC endpoints, first = primary; `URL#name=NAME&priority=N` names one or
    sets its priority (lower = preferred). Empty: start the embedded localnet."""
    rpc_timeout_seconds: float = 5.0
    """Upper bound of one Solana RPC call (always also bounded by the gRPC deadline)."""
    rpc_pool_size: int = 5
    """Keep-alive HTTP connections per Solana endpoint."""
    rpc_routing: str = Field(default="primary", pattern="^(primary|sticky|latency)$")
    """Which healthy Solana endpoint gets traffic: `primary` (best priority; back to a
    recovered one after `rpc_failback_seconds`), `sticky` (stay until it fails) or
    `latency` (lowest latency EWMA)."""
    rpc_probe_interval_seconds: float = Field(default=1.0, gt=0)
    """How often every Solana endpoint is probed (getHealth, getSlot)."""
    rpc_max_slot_lag: int = Field(default=50, ge=0)
    """An endpoint this many slots behind the best one is taken out of rotation."""
    rpc_breaker_failures: int = Field(default=3, ge=1)
    """Consecutive failures (calls or probes) that open an endpoint's circuit breaker."""
    rpc_breaker_cooldown_seconds: float = Field(default=2.0, gt=0)
    """How long an open breaker waits before a trial probe (half-open)."""
    rpc_failback_seconds: float = Field(default=10.0, ge=0)
    """A recovered endpoint must stay healthy this long before `primary` routing moves
    traffic back to it (no flapping)."""
    data_dir: Path = Path("./agent-staking-data")
    """Directory of the embedded state (SQLite database)."""

    database_url: str = ""
    """The service's database (API keys, relay submissions): `sqlite:///path` or
    `postgresql://...`; empty = the SQLite file `data_dir/keys.db`."""
    database_timeout_seconds: float = Field(default=2.0, gt=0)
    """Upper bound of every database call (one transaction, waiting for a connection
    included): a hung or blackholed database answers in this time, never the caller's
    deadline. Three calls in a row that fail or run out of time start an outage."""
    database_recheck_seconds: float = Field(default=1.0, gt=0)
    """During a database outage, how often a probe tries it again; until one answers,
    calls that need the database fail at once (UNAVAILABLE, RetryInfo) instead of each
    waiting for its own timeout, and health reports `agentstaking.v1.KeyService`
    NOT_SERVING."""
    key_cache_ttl_seconds: float = 5.0
    """How long a verified key is trusted without the database: the bound within which a
    revocation or rotation on another replica takes effect here."""
    key_outage_grace_seconds: float = Field(default=300.0, ge=0)
    """During a database outage, a key verified here before keeps authenticating from the
    cache for this long after its cache entry expired (so at most `key_cache_ttl_seconds`
    + this after the last successful check); 0 refuses at once. The trade-off: a
    revocation, rotation or expiry change made meanwhile (on a replica that reaches the
    database) takes effect here only when the database answers again, or when this time
    runs out. Keys not verified recently get UNAVAILABLE."""
    key_usage_flush_seconds: float = Field(default=1.0, gt=0)
    """How often request counts and last-used times are written (batched, never per call).
    A crash (`kill -9`) loses only what was counted since the last write that completed:
    the calls of at most one interval plus one write, and under load fewer than
    twice `key_usage_flush_calls`. During a database outage the counts wait in memory
    (and a crash then loses them all); they are written once it answers."""
    key_usage_flush_calls: int = Field(default=100, ge=1)
    """Counted calls that trigger a write before the interval ends (bounds what a crash
    loses under heavy load: one batch being written plus one filling)."""
    key_rotation_days: float = 30.0
    """A key is due for rotation this long after creation or its last rotation."""
    key_rotation_check_seconds: float = 60.0
    """How often keys overdue for rotation are looked for."""
    key_expire_overdue_days: float | None = None
    """When set, keys still overdue for rotation this long after their due date are expired."""
    bootstrap_keys: bool | None = None
    """Create and print an admin and a staking key when the key store is empty.
    Default: on with the embedded localnet, off otherwise."""

    service_fee_bps: int = Field(default=10, ge=0, le=10_000)
    """Service fee in basis points of the staked amount (floor); 0 = no fee instruction."""
    fee_recipient: str | None = None
    """Wallet receiving the service fee. Required with an external RPC when the fee is > 0;
    the embedded localnet derives and funds one."""
    default_vote_account: str | None = None
    """Vote account used when a stake request names none; unset: the top of the
    ListValidators ranking that the caller's key allows."""

    # Staking lifecycle (unstake, withdraw, merge, positions, validators).
    featured_vote_accounts: list[str] = Field(default_factory=list)
    """Vote accounts the operator features: flagged (and said so in the reasons) in
    ListValidators; the ranking itself does not change."""
    priority_fees_cache_seconds: float = Field(default=2.0, ge=0)
    """How long the recent prioritization fees of a set of write-locked accounts
    (getRecentPrioritizationFees, for builds with a priority level) are reused; for as
    long again they are used while one request refreshes them in the background (a
    wallet that keeps building never waits for the node); 0 asks on every build. At
    most 4,096 sets are kept."""
    stake_accounts_cache_seconds: float = Field(default=3.0, ge=0)
    """How long a wallet's ListStakeAccounts read (its stake accounts, Clock and
    StakeHistory) is reused; 0 reads the chain on every call. Builds always read fresh."""
    rewards_cache_entries: int = Field(default=200_000, ge=0)
    """GetRewards: most (epoch, address) rewards kept in memory per process (least
    recently used dropped first; about 200 bytes each). Every one read from the chain is
    also kept in the database, shared by replicas and restarts."""

    # Liquid staking (SPL stake pools).
    stake_pools: Annotated[list[StakePoolSetting], NoDecode] = Field(default_factory=list)
    """SPL stake pools offered by ListStakePools and the liquid staking builds, in order:
    JSON (`[{"address": "...", "label": "JitoSOL"}]` or `{"<address>": "JitoSOL"}`) or
    text (`JitoSOL=<address>,<address>=bSOL`). Empty: liquid staking offers no pool."""

    max_message_bytes: int = 1024 * 1024
    """Largest request or response message."""

    # Transport security (service/server.py): TLS, or mutual TLS with a client CA.
    tls_cert_file: Path | None = None
    """Server certificate chain (PEM) for gRPC and /metrics; with `tls_key_file` turns TLS
    on. Re-read when the file changes: new connections get the new certificate, calls on
    open connections go on."""
    tls_key_file: Path | None = None
    """Private key (PEM) of `tls_cert_file`."""
    tls_client_ca_file: Path | None = None
    """CA bundle (PEM) that client certificates must chain to: set, every client must
    present a certificate it verifies (mutual TLS)."""

    # Limits that hold under abuse (service/interceptors/_admission.py and grpc core).
    max_concurrent_rpcs: int = Field(default=1000, ge=0)
    """Unary calls in the service at once; beyond, new calls are refused with
    RESOURCE_EXHAUSTED and RetryInfo before their request is read (health checks never
    are). 0: no limit."""
    max_concurrent_watches: int = Field(default=10_000, ge=0)
    """Server-streaming calls (WatchTransaction) open at once; beyond, RESOURCE_EXHAUSTED.
    0: no limit."""
    max_streams_per_connection: int = Field(default=1000, ge=1)
    """HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS the server advertises: calls open at once on
    one connection."""
    max_connections: int = Field(default=0, ge=0)
    """Client connections accepted at once; 0: no limit beyond the process's descriptors."""
    request_timeout_seconds: float = Field(default=10.0, ge=0)
    """A call whose request message has not fully arrived this long after its headers is
    answered DEADLINE_EXCEEDED (REQUEST_TIMEOUT). 0: wait as long as the call's deadline."""
    max_waiting_requests: int = Field(default=1000, ge=0)
    """Calls waiting for their request message at once; another arriving cuts the one that
    has waited longest (RESOURCE_EXHAUSTED). 0: no limit."""
    default_deadline_seconds: float = Field(default=30.0, ge=0)
    """Deadline of a unary call that brings none (no grpc-timeout). 0: none."""
    default_stream_deadline_seconds: float = Field(default=3600.0, ge=0)
    """Deadline of a server-streaming call that brings none. 0: none."""
    overload_retry_after_seconds: float = Field(default=1.0, gt=0)
    """The RetryInfo delay of calls refused because the server is at a limit."""
    max_pending_calls: int = Field(default=20_000, ge=1)
    """Calls gRPC core queues for the service before it sheds (with CANCELLED, which this
    service never sends itself): sized so that bursts reach the admission limits above,
    which answer RESOURCE_EXHAUSTED."""
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection that has not finished its HTTP/2 preface (and TLS handshake) this long
    after connecting is closed."""
    max_metadata_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest request metadata (headers) accepted; larger calls are refused."""
    keepalive_time_seconds: float = Field(default=60.0, gt=0)
    """The server pings a connection idle this long to find dead peers."""
    keepalive_timeout_seconds: float = Field(default=20.0, gt=0)
    """A ping unanswered this long closes the connection."""
    keepalive_min_ping_interval_seconds: float = Field(default=10.0, ge=0)
    """Clients may ping at most this often while no call is open; more often counts a
    strike, and `keepalive_max_ping_strikes` strikes close the connection (GOAWAY
    too_many_pings)."""
    keepalive_max_ping_strikes: int = Field(default=2, ge=0)
    """Pings allowed below `keepalive_min_ping_interval_seconds` before the GOAWAY."""
    max_connection_idle_seconds: float = Field(default=300.0, ge=0)
    """A connection without calls for this long is closed (GOAWAY). 0: never."""
    max_connection_age_seconds: float = Field(default=1800.0, ge=0)
    """A connection this old is asked to reconnect (GOAWAY), so load spreads over new
    replicas. 0: never."""
    max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)
    """How long calls on a connection past its age may finish before it is closed."""
    max_priority_fee_lamports: int = Field(default=10_000_000, ge=0)
    """Largest priority fee (compute-unit price times limit) a built transaction may carry,
    whether the caller set the price or it came from recent fees; a key's policy can set a
    lower one. 0: no priority fees at all."""
    shutdown_grace_seconds: float = 10.0
    """How long calls in flight may finish after SIGTERM before they are cancelled."""
    startup_timeout_seconds: float = Field(default=120.0, ge=0)
    """How long start-up waits for its dependencies (the database, Redis when
    `ratelimit_fail_closed`, a Solana endpoint) before it gives up and exits 1 with one
    line saying which did not answer; 0 waits forever. Meanwhile the server listens,
    health is NOT_SERVING, and each attempt logs one line."""
    startup_retry_max_seconds: float = Field(default=5.0, gt=0)
    """The longest pause between two start-up attempts (the first is 0.5 s, then
    doubled)."""
    blockhash_refresh_seconds: float = 2.0
    """How often the cached blockhash and slot are refreshed."""
    context_refresh_seconds: float = 30.0
    """How often rent, minimum delegation, epoch schedule and vote accounts are refreshed."""
    blockhash_min_remaining_blocks: int = 60
    """A cached blockhash is handed out only while at least this many blocks of validity remain;
    one with fewer left is refreshed at once (calls meanwhile answer UNAVAILABLE)."""

    relay_max_pending: int = Field(default=10_000, ge=1)
    """Relay: most transactions in flight (submitted, not yet finalized, failed or expired);
    beyond it SubmitTransaction answers RESOURCE_EXHAUSTED (RELAY_BUSY)."""
    relay_poll_seconds: float = Field(default=0.4, gt=0)
    """Relay: how often the landing loop polls the statuses of in-flight transactions
    (one getSignatureStatuses per 256 signatures)."""
    relay_rebroadcast_seconds: float = Field(default=2.0, gt=0)
    """Relay: how often a transaction that has not landed is sent again."""
    relay_send_concurrency: int = Field(default=16, ge=1)
    """Relay: most rebroadcasts in flight at once."""
    relay_retain_seconds: float = Field(default=600.0, ge=0)
    """Relay: how long outcomes (finalized, failed, expired) stay in memory; later
    lookups ask the chain."""
    relay_max_retained: int = Field(default=10_000, ge=0)
    """Relay: most outcomes kept in memory (oldest dropped first)."""
    relay_preflight_commitment: str = Field(
        default="confirmed", pattern="^(processed|confirmed|finalized)$"
    )
    """Relay: bank commitment of the node's preflight simulation."""
    relay_lease_seconds: float = Field(default=10.0, gt=0)
    """Relay: every submission is recorded in the database before it is sent and owned
    by the replica relaying it under a lease of this many seconds, renewed every third
    of it. When a replica dies (crash, `kill -9`), any other (or its restart) takes its
    submissions over within this time plus a third of it; a graceful stop hands them
    over at once. Replicas' clocks must agree to well within it (NTP)."""
    relay_record_retain_seconds: float = Field(default=86_400.0, ge=0)
    """Relay: how long the database keeps finished submissions (finalized, failed,
    expired) for status lookups by any replica; later lookups ask the chain."""

    # Receipts and server-held intents (docs/intents.md).
    receipt_key_file: Path | None = None
    """The Ed25519 keys that sign every build's receipt (JSON; create or rotate one with
    `agent-staking receipt-key`). Re-read within a second when the file changes (a rotation,
    an updated Secret). Unset: `data_dir/receipt-keys.json`, generated on the first
    start; several replicas must share one file (a Secret), else each signs with keys
    the others do not publish."""
    intent_retention_seconds: float = Field(default=30 * 86_400.0, gt=0)
    """How long an intent (what a request_id asked for, its transactions, their
    outcome) is kept after its last change; then it is forgotten and the same
    request_id starts a new intent."""
    # Events (service/events): the outbox, webhooks, streams and the producers.
    webhook_allow_private: bool = False
    """Let webhooks reach loopback, private, link-local and other non-public addresses,
    and use plain http (tests, private deployments). Refused otherwise, when a webhook
    is created or changed and again at connect time (DNS rebinding). Cloud metadata
    and multicast addresses are refused even then."""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    """Upper bound of one webhook delivery attempt (connect, send, answer); slower is a
    failed attempt, retried."""
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        max_length=30,
    )
    """Delays between the attempts of a webhook delivery, one after each failed attempt
    (each varied by +-10 % jitter; a longer `Retry-After` is honoured). When they run
    out the delivery fails and its webhook is disabled until UpdateWebhook enables it.
    The default retries for about 27.6 hours."""
    webhook_lease_seconds: float = Field(default=60.0, gt=0)
    """A replica owns a webhook delivery it sends for this long; if it dies before
    recording the outcome, another replica sends it again after this. Must exceed
    `webhook_timeout_seconds`."""
    webhook_max_in_flight: int = Field(default=32, ge=1)
    """Most webhook delivery attempts in flight at once, per replica."""
    webhook_max_response_bytes: int = Field(default=65_536, ge=0)
    """Most bytes of a webhook receiver's answer read (the rest is not read)."""
    webhooks_max_per_key: int = Field(default=25, ge=1)
    """Most webhooks one API key may have (RESOURCE_EXHAUSTED, WEBHOOK_LIMIT_REACHED)."""
    events_retention_seconds: float = Field(default=604_800.0, gt=0)
    """How long events are kept (7 days): WatchEvents resumes from them, and deliveries
    not made within it fail. Finished deliveries are kept as long."""
    events_poll_seconds: float = Field(default=0.5, gt=0)
    """How often each replica reads events recorded by the others (streams) and looks
    for due webhook deliveries."""
    events_producer_interval_seconds: float = Field(default=15.0, gt=0)
    """How often the producing replica reads the watched wallets' stake accounts, their
    validators and the keys due for rotation (also at once when the epoch changes):
    two Solana calls per watched wallet per round."""
    events_leader_lease_seconds: float = Field(default=15.0, gt=0)
    """One replica produces events, under a lease of this many seconds in the database
    renewed every third of it; when it dies another takes over within this time."""
    events_rotation_notice_days: float = Field(default=7.0, ge=0)
    """An `api_key.rotation_due` event is sent this many days before a key's rotation
    time."""
    events_max_watched_wallets: int = Field(default=10_000, ge=1)
    """Most wallets the producer follows (the first by address); more is logged."""

    # Rate limits (service/ratelimit): GCRA buckets, each with a rate per minute and a
    # burst; a rate of 0 turns that dimension off.
    ratelimit_key_per_minute: int = Field(default=6000, ge=0)
    """Calls per minute per API key (a key's policy `rate_limit` overrides it)."""
    ratelimit_key_burst: int = Field(default=1000, ge=0)
    """Calls at once per API key (0: as many as per minute)."""
    ratelimit_wallet_per_minute: int = Field(default=10, ge=0)
    """Calls per minute per wallet (builds and submits; reads by their factor)."""
    ratelimit_wallet_burst: int = Field(default=10, ge=0)
    """Calls at once per wallet (0: as many as per minute)."""
    ratelimit_peer_per_minute: int = Field(default=600, ge=0)
    """Calls per minute per peer address, for open services and failed authentications."""
    ratelimit_peer_burst: int = Field(default=300, ge=0)
    """Calls at once per peer address (0: as many as per minute)."""
    ratelimit_builds_factor: float = Field(default=1.0, gt=0)
    """Multiplies every limit (rate and burst) of Build*Transaction calls."""
    ratelimit_submits_factor: float = Field(default=1.0, gt=0)
    """Multiplies every limit of SubmitTransaction calls."""
    ratelimit_reads_factor: float = Field(default=3.0, gt=0)
    """Multiplies every limit of Get*/List*/Watch* calls and of the open services."""
    ratelimit_admin_factor: float = Field(default=0.1, gt=0)
    """Multiplies every limit of KeyService calls."""
    ratelimit_exempt_services: list[str] = Field(default_factory=lambda: ["grpc.health.v1.Health"])
    """Services never rate limited (full names)."""
    ratelimit_fail_closed: bool = False
    """While Redis is unreachable refuse calls (UNAVAILABLE) instead of limiting each
    replica on its own (fail-open, the default)."""
    redis_url: str = ""
    """Redis shared by the replicas for rate limits (`redis://host:6379/0`); empty: each
    replica limits in memory."""
    redis_key_prefix: str = "agent-staking:ratelimit:"
    """Prefix of the rate-limit keys in Redis."""
    redis_timeout_seconds: float = Field(default=0.05, gt=0)
    """Upper bound of one rate-limit decision in Redis; slower counts as an outage."""
    redis_recheck_seconds: float = Field(default=1.0, gt=0)
    """During a Redis outage, how often one call tries Redis again."""

    # Observability (service/telemetry): Prometheus metrics, JSON logs, OpenTelemetry traces.
    health_listen: str = "off"
    """A port of its own for `grpc.health.v1.Health` (plaintext, health only, served on a
    thread of its own so a flood of calls on the gRPC port cannot delay probes), HOST:PORT;
    `off`: health is served on the gRPC port only. Point Kubernetes probes here (the
    kubelet's gRPC probe does not speak TLS)."""
    metrics_listen: str = "127.0.0.1:9464"
    """Where `/metrics` (Prometheus) is served, HOST:PORT; `off` turns it off. The default
    (loopback) is skipped with a warning when its port is taken; an address set explicitly
    must bind."""
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    """Level of every logger without one of its own in `log_levels`."""
    log_levels: dict[str, str] = Field(default_factory=dict)
    """Levels of single loggers, e.g. `{"service.chain": "DEBUG", "service.access":
    "WARNING"}` (`service.access` writes the one line per RPC)."""
    log_format: str = Field(default="json", pattern="^(json|text)$")
    """`json`: one JSON object per line on stdout; `text`: plain lines for a terminal."""
    tracing_exporter: str = Field(default="none", pattern="^(none|otlp-grpc|otlp-http)$")
    """Where spans go: `none` (trace ids still label logs and `x-request-id`), `otlp-grpc`
    or `otlp-http` (an OpenTelemetry collector)."""
    tracing_endpoint: str = ""
    """OTLP endpoint; empty: OpenTelemetry's standard `OTEL_EXPORTER_OTLP_ENDPOINT`, else
    `http://localhost:4317` (gRPC) or `http://localhost:4318/v1/traces` (HTTP)."""
    tracing_headers: dict[str, str] = Field(default_factory=dict)
    """Extra OTLP request headers (a vendor's API key, say); never logged."""
    tracing_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces recorded; a caller's sampled `traceparent` is always followed."""
    tracing_service_name: str = "agent-staking"
    """`service.name` of the spans."""

    localnet_listen: str = "127.0.0.1:8899"
    """Embedded localnet: where its Solana JSON-RPC endpoint listens (port 0: any free port)."""
    localnet_validators: int = 5
    """Embedded localnet: genesis validators."""
    localnet_seed: int = 0
    """Embedded localnet: seed of every genesis key."""
    localnet_slot_ms: int = 400
    """Embedded localnet: milliseconds per slot."""
    localnet_slots_per_epoch: int = 432_000
    """Embedded localnet: slots per epoch."""

    @field_validator("fee_recipient", "default_vote_account")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is not None:
            Pubkey.from_string(value)
        return value

    @field_validator("featured_vote_accounts")
    @classmethod
    def _valid_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            Pubkey.from_string(address)
        return value

    @field_validator("stake_pools", mode="before")
    @classmethod
    def _stake_pools_text(cls, value: Any) -> Any:
        return _parse_stake_pools(value)

    @field_validator("stake_pools")
    @classmethod
    def _distinct_pools(cls, value: list[StakePoolSetting]) -> list[StakePoolSetting]:
        addresses = [pool.address for pool in value]
        if len(set(addresses)) != len(addresses):
            raise ValueError("a stake pool is listed twice")
        if len(value) > MAX_STAKE_POOLS:
            raise ValueError(f"at most {MAX_STAKE_POOLS} stake pools")
        return value

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every retry delay must be positive")
        return value

    @model_validator(mode="after")
    def _webhook_lease(self) -> Settings:
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("webhook_lease_seconds must exceed webhook_timeout_seconds")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @property
    def tls(self) -> bool:
        """Whether gRPC and /metrics are served over TLS."""
        return self.tls_cert_file is not None

    @property
    def embedded_localnet(self) -> bool:
        return not self.rpc_urls

    @property
    def store_url(self) -> str:
        """The service's database: `database_url`, else the SQLite file
        `data_dir/keys.db` (named when it held only keys; it holds all the state)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'keys.db'}"

    @property
    def receipt_key_path(self) -> Path:
        """The receipt key file: `receipt_key_file`, else `data_dir/receipt-keys.json`."""
        return self.receipt_key_file or self.data_dir / "receipt-keys.json"

    @property
    def store_location(self) -> str:
        """Where the service's state lives, as said to people: the SQLite file's absolute
        path, or the database URL without credentials."""
        url = self.store_url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls),)
        return sources


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port).

    Raises:
        ValueError: not of that form.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Settings from flags (`overrides`), environment, then the TOML file."""
    import os

    path = config_file or (
        Path(os.environ[f"{ENV_PREFIX}CONFIG_FILE"])
        if os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        else None
    )
    cls: type[Settings] = Settings
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(
                env_prefix=ENV_PREFIX,
                extra="forbid",
                frozen=True,
                use_attribute_docstrings=True,
                toml_file=path,
            )

        cls = FileSettings
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return cls(**clean)
    except ValidationError as exc:
        raise ValueError(describe_invalid_settings(exc, path)) from None
    except SettingsError as exc:  # a list or map setting that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else "a setting"
        variable = f" ({ENV_PREFIX}{name.upper()})" if found else ""
        raise ValueError(
            f"invalid settings: {name}{variable}: not valid JSON (a list or map setting "
            'is JSON, e.g. ["a", "b"] or {"k": "v"})'
        ) from None
    except ValueError as exc:  # the TOML file does not parse
        if path is None:
            raise
        raise ValueError(f"configuration file {path}: {exc}") from None


def describe_invalid_settings(error: ValidationError, path: Path | None = None) -> str:
    """One line naming each invalid setting (its variable) and what is wrong, without
    the values: pydantic's own text quotes the input, all settings at once when a check
    spans several, secrets included."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        name = str(item["loc"][0]) if item["loc"] else ""
        if name in Settings.model_fields:
            problems.append(f"{name} ({ENV_PREFIX}{name.upper()}): {message}")
        elif name:
            problems.append(f"{name}: {message}")
        else:
            problems.append(message)
    where = f" (environment, flags or {path})" if path is not None else ""
    return f"invalid settings{where}: " + "; ".join(problems)


def settings_reference(flags: Mapping[str, str]) -> str:
    """The configuration reference: a Markdown table of every setting, its environment
    variable (and ``flags``' command-line flag), default and meaning, from the field
    docstrings above (docs/operators.md holds it; a test keeps the two equal)."""
    rows = ["| Environment variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = f"`{ENV_PREFIX}{name.upper()}`"
        if name in flags:
            variable += f" (`{flags[name]}`)"
        default = field.get_default(call_default_factory=True)
        if default is None:
            shown = "unset"
        elif default == "":
            shown = "empty"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif isinstance(default, list | dict):
            shown = f"`{json.dumps(default)}`"
        elif isinstance(default, float) and default.is_integer():
            shown = f"`{int(default)}`"
        else:
            shown = f"`{default}`"
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| {variable} | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"
