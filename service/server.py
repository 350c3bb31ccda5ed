"""Assembles the grpc.aio server: servicers, health, reflection, chain, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from agentstaking.v1 import (
    events_pb2,
    events_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    staking_pb2,
    staking_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from solders.keypair import Keypair

from service._startup import Startup, StartupPolicy
from service.api import (
    BuildGate,
    EventServicer,
    KeyServicer,
    StakingServicer,
    add_reflection,
    add_servicer,
    event_json,
)
from service.chain import (
    ChainContext,
    ChainUnavailable,
    FailoverPolicy,
    FailoverRpc,
    FeePolicy,
    IntentBook,
    LiquidStakingOperations,
    NonceAccounts,
    Relay,
    RelayConfig,
    RewardOperations,
    RewardsCache,
    Routing,
    SqlIntentStore,
    SqlRewardsStore,
    SqlSubmissionLog,
    StakeManagement,
    StakePoolConfig,
    StakingOperations,
    parse_endpoints,
)
from service.config import SERVE_FLAGS, Settings, parse_host_port
from service.core.programs import LAMPORTS_PER_SOL
from service.events import DeliveryConfig, Events, EventsConfig, ProducerConfig
from service.health import Health, HealthEndpoint
from service.interceptors import (
    AccessLogInterceptor,
    Admission,
    AdmissionLimits,
    AuthInterceptor,
    BuildMetricsInterceptor,
    InterceptorChain,
    MetricsInterceptor,
    PeerAuthFailures,
    RateLimitInterceptor,
    RequestCheck,
    TracingInterceptor,
)
from service.keys import ApiKey, KeyManager, Scope, SqlKeyStore, now_utc
from service.localnet import LocalnetConfig, LocalnetServer
from service.ratelimit import BackendUnavailableError, RateLimiter, open_limiter
from service.receipts import ReceiptSigner
from service.store import Database, StoreUnavailableError
from service.telemetry import MetricsListener, Telemetry
from service.tls import CertificateFiles

log = logging.getLogger(__name__)

STAKING_SERVICE = staking_pb2.DESCRIPTOR.services_by_name["StakingService"].full_name
KEY_SERVICE = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
EVENT_SERVICE = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
WATCH_END_MARGIN_SECONDS = 1.0
"""How long before the shutdown grace ends the watches still open are answered."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# What "does not answer yet" looks like at start-up, per dependency.
_STORE_DOWN = (StoreUnavailableError,)
_REDIS_DOWN = (BackendUnavailableError,)


def embedded_fee_wallet(seed: int) -> str:
    """The fee wallet of the embedded localnet: derived from its seed, like its genesis keys."""
    import hashlib

    digest = hashlib.sha256(f"agent-staking-localnet:{seed}:fee-wallet:0".encode()).digest()
    return str(Keypair.from_seed(digest).pubkey())


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's limits, from the settings (see the configuration reference)."""

    def ms(seconds: float) -> int:
        # 0 turns an age or idle limit off: gRPC core's "infinite".
        return int(seconds * 1000) if seconds > 0 else 2**31 - 1

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # A stream stops counting against the limit when it closes, not when gRPC core
        # has freed it: a client's burst on a new connection (sent before it read our
        # SETTINGS) is not refused (REFUSED_STREAM, UNAVAILABLE to the caller) for the
        # streams just finished.
        ("grpc.http.overload_protection", 0),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        # Calls gRPC core holds for the application: shed beyond with CANCELLED (which
        # admission never needs: it answers RESOURCE_EXHAUSTED well below this).
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_calls),
        ("grpc.server_handshake_timeout_ms", ms(settings.handshake_timeout_seconds)),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_seconds)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.keepalive_min_ping_interval_seconds * 1000),
        ),
        ("grpc.http2.max_ping_strikes", settings.keepalive_max_ping_strikes),
        ("grpc.max_connection_idle_ms", ms(settings.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", ms(settings.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace_seconds)),
        # Several worker processes (`--workers`) share the port.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    if settings.max_connections:
        options.append(("grpc.max_allowed_incoming_connections", settings.max_connections))
    return options


class ListenError(OSError):
    """An address the server must listen on cannot be had: one line naming it, what
    wanted it and how to choose another."""

    def __init__(self, address: str, what: str, how: str, cause: OSError | None) -> None:
        if cause is not None and cause.errno is not None:
            reason = os.strerror(cause.errno).lower()
        else:
            reason = "in use or not available here"
        super().__init__(
            f"cannot listen on {address} for {what}: {reason} (choose another with {how})"
        )

    @classmethod
    def of_setting(
        cls, address: str, what: str, setting: str, cause: OSError | None
    ) -> ListenError:
        """For an address a setting gives (its flag, if any, and its variable)."""
        flag = SERVE_FLAGS.get(setting)
        variable = f"AGENT_STAKING_{setting.upper()}"
        return cls(address, what, f"{flag} or {variable}" if flag else variable, cause)


_warned_plaintext: set[str] = set()


def warn_plaintext(host: str, what: str, how: str) -> None:
    """Warn, once per process and endpoint kind, of plaintext on a non-loopback address:
    API keys would cross the network in the clear unless something else encrypts it."""
    if is_loopback(host) or what in _warned_plaintext:
        return
    _warned_plaintext.add(what)
    log.warning(
        "%s listens on %s without TLS: API keys and responses cross the network in the "
        "clear unless a proxy or mesh encrypts them; set %s",
        what,
        host,
        how,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AgentStakingServer:
    """The service: `start()`, then `wait()`; `stop()` drains gracefully."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`clock` (UTC now) is injectable so key expiry and grace periods can be tested;
        `telemetry` (tracer provider and metrics) too, else it follows the settings."""
        self.settings = settings
        self._clock = clock
        self._owns_telemetry = telemetry is None
        self.telemetry = telemetry if telemetry is not None else Telemetry.from_settings(settings)
        self.metrics_listener: MetricsListener | None = None
        self.localnet: LocalnetServer | None = None
        self.rpc_url = settings.rpc_urls[0] if settings.rpc_urls else ""
        self.port = 0
        self.health = Health()
        self._server: grpc.aio.Server | None = None
        self._rpc: FailoverRpc | None = None
        self.chain: ChainContext | None = None
        self.relay: Relay | None = None
        self.intents: IntentBook | None = None
        self.receipts: ReceiptSigner | None = None
        self.events: Events | None = None
        self.database: Database | None = None
        self.rewards: RewardOperations | None = None
        self.keys: KeyManager | None = None
        self.limiter: RateLimiter | None = None
        self.bootstrapped_keys: list[tuple[ApiKey, str]] = []
        self.admission: Admission | None = None
        self.health_endpoint: HealthEndpoint | None = None
        self.certificates: CertificateFiles | None = None
        self._stopping = False
        # Health reports made from callbacks, held until done (the loop keeps only a
        # weak reference to a task) and awaited by stop().
        self._health_reports: set[asyncio.Task[None]] = set()

    async def start(self, *, on_wait: Callable[[], None] | None = None) -> None:
        """Listen at once, then wait for the dependencies (the database, Redis when
        fail-closed, Solana) with backoff until `startup_timeout_seconds`; health is
        NOT_SERVING until they answer. Returns when the service is ready.

        Args:
            on_wait: Called before the first line about a dependency that does not
                answer yet.

        Raises:
            StartupError: A dependency did not answer in time.
            OSError: The address cannot be bound.
        """
        settings = self.settings
        startup = Startup(
            StartupPolicy(
                give_up_after=settings.startup_timeout_seconds,
                max_delay=settings.startup_retry_max_seconds,
            ),
            on_wait=on_wait,
        )
        # Parsed first: a bad --rpc-url or certificate, or an address in use, fails
        # before anything has started.
        endpoints = parse_endpoints(settings.rpc_urls) if settings.rpc_urls else []
        self._check_addresses_free()
        fee = self._fee_policy()
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            self.certificates = CertificateFiles(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        self.receipts = self._receipt_signer()
        tracer = self.telemetry.tracer
        metrics = self.telemetry.metrics
        self.database = Database(
            settings.store_url,
            timeout=settings.database_timeout_seconds,
            recheck=settings.database_recheck_seconds,
        )
        self.database.on_change(self._on_database_health)
        self.keys = KeyManager(
            SqlKeyStore(self.database),
            clock=self._clock or now_utc,
            cache_ttl=settings.key_cache_ttl_seconds,
            outage_grace=settings.key_outage_grace_seconds,
            usage_flush_interval=settings.key_usage_flush_seconds,
            usage_flush_calls=settings.key_usage_flush_calls,
            rotation_period=timedelta(days=settings.key_rotation_days),
            overdue_scan_interval=settings.key_rotation_check_seconds,
            expire_overdue_after=(
                timedelta(days=settings.key_expire_overdue_days)
                if settings.key_expire_overdue_days is not None
                else None
            ),
            tracer=tracer,
        )
        metrics.watch_event_loop(asyncio.get_running_loop())
        metrics.watch_heap()
        metrics.watch_keys(self.keys)
        metrics.watch_database(self.database)
        if settings.embedded_localnet:
            self.localnet = LocalnetServer(
                LocalnetConfig(
                    validators=settings.localnet_validators,
                    seed=settings.localnet_seed,
                    slot_duration=settings.localnet_slot_ms / 1000,
                    slots_per_epoch=settings.localnet_slots_per_epoch,
                )
            )
            try:
                await self.localnet.start(*parse_host_port(settings.localnet_listen))
            except OSError as exc:
                raise ListenError.of_setting(
                    settings.localnet_listen, "the embedded localnet", "localnet_listen", exc
                ) from None
            self.rpc_url = self.localnet.url
            log.info("no --rpc-url given: started the embedded localnet at %s", self.rpc_url)
        self._rpc = FailoverRpc(
            endpoints or parse_endpoints([f"{self.rpc_url}#name=localnet"]),
            policy=FailoverPolicy(
                routing=Routing(settings.rpc_routing),
                probe_interval=settings.rpc_probe_interval_seconds,
                max_slot_lag=settings.rpc_max_slot_lag,
                breaker_failures=settings.rpc_breaker_failures,
                breaker_cooldown=settings.rpc_breaker_cooldown_seconds,
                failback_after=settings.rpc_failback_seconds,
            ),
            pool_size=settings.rpc_pool_size,
            timeout=settings.rpc_timeout_seconds,
            tracer=tracer,
            observer=metrics,
        )
        metrics.watch_failover(self._rpc)
        self.chain = ChainContext(
            self._rpc,
            blockhash_refresh=settings.blockhash_refresh_seconds,
            context_refresh=settings.context_refresh_seconds,
            min_remaining_blocks=settings.blockhash_min_remaining_blocks,
            rpc_timeout=settings.rpc_timeout_seconds,
            on_health=self._on_chain_health,
        )
        metrics.watch_chain(self.chain)

        self.limiter = open_limiter(settings)
        self.limiter.tracer = tracer
        metrics.watch_limiter(self.limiter)
        self.admission = Admission(
            AdmissionLimits(
                max_concurrent_rpcs=settings.max_concurrent_rpcs,
                max_concurrent_streams=settings.max_concurrent_watches,
                request_timeout=settings.request_timeout_seconds,
                max_waiting=settings.max_waiting_requests,
                default_deadline=settings.default_deadline_seconds,
                default_stream_deadline=settings.default_stream_deadline_seconds,
                overload_retry_after=settings.overload_retry_after_seconds,
            ),
            refusals=metrics,
            exempt_services=(HEALTH_SERVICE,),
        )
        metrics.watch_admission(self.admission.stats)
        server = grpc.aio.server(
            # Outermost first; one grpc interceptor that wraps each method once.
            interceptors=[
                InterceptorChain(
                    [
                        self.admission,
                        TracingInterceptor(tracer, spans=self.telemetry.exports_spans),
                        MetricsInterceptor(metrics),
                        AccessLogInterceptor(),
                        AuthInterceptor(
                            self.keys,
                            {
                                STAKING_SERVICE: Scope.STAKING.value,
                                KEY_SERVICE: None,
                                EVENT_SERVICE: (Scope.STAKING.value, Scope.ADMIN.value),
                            },
                            failures=PeerAuthFailures(self.limiter),
                            policy_service=STAKING_SERVICE,
                        ),
                        RateLimitInterceptor(
                            self.limiter,
                            admin_services={KEY_SERVICE},
                            exempt_services=settings.ratelimit_exempt_services,
                        ),
                        BuildMetricsInterceptor(metrics, frozenset({STAKING_SERVICE})),
                        RequestCheck(),
                    ]
                )
            ],
            options=server_options(settings),
        )
        operations = StakingOperations(
            rpc=self._rpc,
            context=self.chain,
            fee=fee,
            # Unset: the top of the validator ranking, resolved per call from the cache.
            default_vote_account=settings.default_vote_account or "",
            featured_vote_accounts=settings.featured_vote_accounts,
            stake_accounts_cache_seconds=settings.stake_accounts_cache_seconds,
            rpc_timeout=settings.rpc_timeout_seconds,
            max_priority_fee_lamports=settings.max_priority_fee_lamports,
            priority_fees_cache_seconds=settings.priority_fees_cache_seconds,
        )
        self.rewards = RewardOperations(
            rpc=self._rpc,
            context=self.chain,
            operations=operations,
            # Completed epochs' rewards: in memory, and in the key store's database.
            cache=RewardsCache(
                SqlRewardsStore(self.database), max_entries=settings.rewards_cache_entries
            ),
            rpc_timeout=settings.rpc_timeout_seconds,
            stake_accounts_cache_seconds=settings.stake_accounts_cache_seconds,
        )
        # This replica's name on its leases (relay submissions, deliveries, the lead).
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.events = self._events(operations, owner)
        self.relay = Relay(
            self._rpc,
            RelayConfig(
                max_pending=settings.relay_max_pending,
                poll_interval=settings.relay_poll_seconds,
                rebroadcast_interval=settings.relay_rebroadcast_seconds,
                retain_seconds=settings.relay_retain_seconds,
                max_retained=settings.relay_max_retained,
                send_concurrency=settings.relay_send_concurrency,
                rpc_timeout=settings.rpc_timeout_seconds,
                preflight_commitment=settings.relay_preflight_commitment,
                lease_seconds=settings.relay_lease_seconds,
                record_retain_seconds=settings.relay_record_retain_seconds,
            ),
            submissions=SqlSubmissionLog(self.database, listener=self.events),
            owner=owner,
        )
        metrics.watch_relay(self.relay)
        self.intents = IntentBook(
            SqlIntentStore(self.database),
            rpc=self._rpc,
            relay=self.relay,
            retention=settings.intent_retention_seconds,
            rpc_timeout=settings.rpc_timeout_seconds,
        )
        self.relay.on_accepted(self.intents.submitted)
        metrics.watch_events(self.events)
        liquid = LiquidStakingOperations(
            operations=operations,
            rpc=self._rpc,
            context=self.chain,
            pools=[StakePoolConfig(address=p.address, label=p.label) for p in settings.stake_pools],
            rpc_timeout=settings.rpc_timeout_seconds,
        )
        add_servicer(
            staking_pb2_grpc.add_StakingServiceServicer_to_server,
            StakingServicer(
                operations,
                self.relay,
                liquid,
                StakeManagement(
                    operations=operations,
                    rpc=self._rpc,
                    context=self.chain,
                    rpc_timeout=settings.rpc_timeout_seconds,
                ),
                self.rewards,
                gate=BuildGate(signer=self.receipts, chain=self.chain, book=self.intents),
                nonces=NonceAccounts(
                    operations=operations,
                    rpc=self._rpc,
                    context=self.chain,
                    rpc_timeout=settings.rpc_timeout_seconds,
                ),
            ),
            server,
        )
        add_servicer(keys_pb2_grpc.add_KeyServiceServicer_to_server, KeyServicer(self.keys), server)
        add_servicer(
            events_pb2_grpc.add_EventServiceServicer_to_server, EventServicer(self.events), server
        )
        add_servicer(health_pb2_grpc.add_HealthServicer_to_server, self.health, server)
        add_reflection(server, [STAKING_SERVICE, KEY_SERVICE, EVENT_SERVICE, HEALTH_SERVICE])
        host, port = parse_host_port(settings.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.certificates is not None:
                self.port = server.add_secure_port(address, self.certificates.grpc_credentials())
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:  # gRPC's way of saying the bind failed
            self.port = 0
        if self.port == 0:
            raise ListenError.of_setting(settings.listen, "gRPC", "listen", None)
        if self.certificates is not None:
            certificates = self.certificates
            metrics.watch_certificate(lambda: certificates.current.not_after.timestamp())
        else:
            warn_plaintext(host, "gRPC", "--tls-cert and --tls-key")
        metrics.initialize(
            [
                staking_pb2.DESCRIPTOR.services_by_name["StakingService"],
                keys_pb2.DESCRIPTOR.services_by_name["KeyService"],
                events_pb2.DESCRIPTOR.services_by_name["EventService"],
                health_pb2.DESCRIPTOR.services_by_name["Health"],
            ]
        )
        await self._start_metrics()
        await self._start_health_endpoint()
        await metrics.start()  # several workers: publishes this one's share
        # Listening from here on: alive (the liveness name), not ready until the
        # dependencies answer.
        for name in ("", STAKING_SERVICE, KEY_SERVICE, EVENT_SERVICE):
            await self._report(name, NOT_SERVING)
        await self._report(HEALTH_SERVICE, SERVING)
        await server.start()
        self._server = server
        await self._start_dependencies(startup, fee)
        await self._set_health(self.chain.healthy)
        log.info(
            "agent-staking serving on %s:%d (Solana RPC %s)", host, self.port, self._redacted_rpc()
        )

    async def _start_dependencies(self, startup: Startup, fee: FeePolicy) -> None:
        """Connect what the service needs, each retried until it answers (see `start`)."""
        settings = self.settings
        assert self.database is not None and self.keys is not None
        assert self.limiter is not None and self._rpc is not None
        assert self.chain is not None and self.relay is not None and self.events is not None
        database, chain = self.database, self.chain
        applied: list[int] = []

        async def connect() -> None:
            applied.extend(await database.connect())

        await startup.wait_for(f"the database {database.url}", connect, _STORE_DOWN)
        if 1 in applied:
            log.warning(
                "created a new, empty store at %s (state from a start in another folder, or "
                "with another AGENT_STAKING_DATA_DIR, is in that one)",
                settings.store_location,
            )
        await self._report(KEY_SERVICE, SERVING)
        await self.keys.start()
        bootstrap = settings.bootstrap_keys
        if bootstrap if bootstrap is not None else settings.embedded_localnet:
            self.bootstrapped_keys = await self.keys.bootstrap_if_empty()
        if settings.redis_url and settings.ratelimit_fail_closed:
            # Fail-closed: no call would pass the rate limits without Redis.
            await startup.wait_for("Redis", self.limiter.backend.ping, _REDIS_DOWN)
        await self.limiter.start()
        await self._rpc.start()
        if self.localnet is not None and fee.bps:
            # A fee transfer into an empty account below rent exemption would fail;
            # the embedded fee wallet starts funded, as an operator's would be.
            await self._rpc.call("requestAirdrop", [fee.recipient, LAMPORTS_PER_SOL])
        await chain.start()
        await startup.wait_for(
            f"Solana RPC {self._redacted_rpc()}",
            lambda: chain.ready(settings.rpc_timeout_seconds),
            (ChainUnavailable,),
        )
        await self.relay.start()
        if self.intents is not None:
            self.intents.start()
        await self.events.start()
        await self._report(EVENT_SERVICE, SERVING if database.up else NOT_SERVING)

    def _receipt_signer(self) -> ReceiptSigner:
        """The receipt keys: the configured file, else the data directory's (generated
        on the first start).

        Raises:
            ReceiptKeyFileError: The file is missing (when configured) or unusable.
        """
        settings = self.settings
        signer = ReceiptSigner(
            settings.receipt_key_path,
            create=settings.receipt_key_file is None,
            now=datetime.now(UTC),
        )
        if signer.created:
            log.warning(
                "generated receipt keys at %s (key %s): keep the file, receipts are "
                "verified with its keys",
                signer.path.resolve(),
                signer.signing_key().key_id,
            )
        if settings.receipt_key_file is None and not settings.store_url.startswith("sqlite"):
            log.warning(
                "receipt keys come from this replica's data directory (%s): with several "
                "replicas set AGENT_STAKING_RECEIPT_KEY_FILE to one file (a Secret) for all",
                signer.path.resolve(),
            )
        return signer

    def _events(self, operations: StakingOperations, owner: str) -> Events:
        """The events service (webhooks, streams, producers), from the settings."""
        settings = self.settings
        assert self.database is not None and self.keys is not None and self.chain is not None
        return Events(
            self.database,
            keys=self.keys,
            wallets=operations,
            context=self.chain,
            render=event_json,
            config=EventsConfig(
                allow_private=settings.webhook_allow_private,
                poll_interval=settings.events_poll_seconds,
                # As long as authentication trusts a verified key (1 s without a cache).
                key_recheck=settings.key_cache_ttl_seconds or 1.0,
                max_webhooks_per_key=settings.webhooks_max_per_key,
                producer=ProducerConfig(
                    interval=settings.events_producer_interval_seconds,
                    lease=settings.events_leader_lease_seconds,
                    rotation_notice=timedelta(days=settings.events_rotation_notice_days),
                    max_wallets=settings.events_max_watched_wallets,
                    retention=settings.events_retention_seconds,
                ),
                delivery=DeliveryConfig(
                    timeout=settings.webhook_timeout_seconds,
                    retry_schedule=tuple(settings.webhook_retry_schedule_seconds),
                    lease=settings.webhook_lease_seconds,
                    max_in_flight=settings.webhook_max_in_flight,
                    max_response_bytes=settings.webhook_max_response_bytes,
                    poll_interval=settings.events_poll_seconds,
                ),
            ),
            owner=owner,
            rewards=self.rewards,
            tracer=self.telemetry.tracer,
        )

    def _check_addresses_free(self) -> None:
        """Fail with one clear line, before anything starts, when an address this
        server must listen on is in use (the binds themselves say so too, later)."""
        settings = self.settings
        wanted = [(settings.listen, "gRPC", "listen")]
        if settings.embedded_localnet:
            wanted.append((settings.localnet_listen, "the embedded localnet", "localnet_listen"))
        if settings.health_listen.strip().lower() not in ("", "off", "none"):
            wanted.append((settings.health_listen, "the health port", "health_listen"))
        for listen, what, setting in wanted:
            host, port = parse_host_port(listen)
            if port == 0 or (settings.workers > 1 and setting != "localnet_listen"):
                continue  # any free port; or shared with the other workers
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    raise ListenError.of_setting(listen, what, setting, exc) from None

    async def _start_metrics(self) -> None:
        """Serve /metrics where the settings say; the default address is skipped (with a
        warning) when taken, so a second instance on one host still starts."""
        listen = self.settings.metrics_listen.strip()
        if listen.lower() in ("", "off", "none"):
            return
        host, port = parse_host_port(listen)
        listener = MetricsListener(
            self.telemetry.metrics,
            tls=self.certificates.ssl_context() if self.certificates is not None else None,
        )
        if self.certificates is None:
            warn_plaintext(host, "/metrics", "--tls-cert and --tls-key")
        try:
            await listener.start(host, port)
        except OSError as exc:
            if "metrics_listen" in self.settings.model_fields_set:
                raise ListenError.of_setting(listen, "/metrics", "metrics_listen", exc) from None
            log.warning("metrics not served: %s is taken (set --metrics-listen)", listen)
            return
        self.metrics_listener = listener
        scheme = "https" if self.certificates is not None else "http"
        log.info("metrics on %s://%s:%d/metrics", scheme, host, listener.port)

    async def _start_health_endpoint(self) -> None:
        listen = self.settings.health_listen.strip()
        if listen.lower() in ("", "off", "none"):
            return
        host, port = parse_host_port(listen)
        endpoint = HealthEndpoint([("grpc.so_reuseport", 1 if self.settings.workers > 1 else 0)])
        try:
            await endpoint.start(host, port)
        except OSError as exc:
            raise ListenError.of_setting(listen, "the health port", "health_listen", exc) from None
        self.health_endpoint = endpoint
        log.info("health (grpc.health.v1, plaintext) on %s:%d", host, endpoint.port)

    def _fee_policy(self) -> FeePolicy:
        settings = self.settings
        recipient = settings.fee_recipient
        if recipient is None and settings.service_fee_bps:
            if not settings.embedded_localnet:
                raise ValueError(
                    "AGENT_STAKING_FEE_RECIPIENT is required when the service fee is above 0 bps"
                )
            recipient = embedded_fee_wallet(settings.localnet_seed)
        return FeePolicy(bps=settings.service_fee_bps, recipient=recipient or "")

    def _redacted_rpc(self) -> str:
        # Endpoint URLs may embed credentials (user:pass@ or an API key in the path).
        from urllib.parse import urlsplit

        parts = urlsplit(self.rpc_url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"

    def _on_chain_health(self, healthy: bool) -> None:
        if self._server is not None and not self._stopping:
            self._report_later(self._set_health(healthy))

    def _on_database_health(self, up: bool) -> None:
        # Only once started: until then start-up reports the database itself.
        if self._server is not None and not self._stopping and self.relay is not None:
            self._report_later(self._report_database(up))

    def _report_later(self, report: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(report)
        self._health_reports.add(task)
        task.add_done_callback(self._health_reports.discard)

    async def _report_database(self, up: bool) -> None:
        """Key management and events need the database (not Solana)."""
        status = SERVING if up else NOT_SERVING
        await self._report(KEY_SERVICE, status)
        await self._report(EVENT_SERVICE, status)

    async def _set_health(self, chain_healthy: bool) -> None:
        if self._stopping:
            return
        status = SERVING if chain_healthy else NOT_SERVING
        await self._report("", status)
        await self._report(STAKING_SERVICE, status)
        # Key management does not need Solana; it needs the database. Builds and
        # cached authentication go on without the database (SubmitTransaction does not).
        await self._report_database(self.database is not None and self.database.up)
        if not chain_healthy:
            log.warning("Solana RPC unreachable: health is NOT_SERVING")

    async def _report(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus
    ) -> None:
        await self.health.set(service, status)
        if self.health_endpoint is not None:
            await self.health_endpoint.set(service, status)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _end_streams(self) -> None:
        """Answer the long calls still open (watches, event streams) before gRPC cuts
        them off without a word."""
        if self.relay is not None:
            self.relay.end_watches()
        if self.events is not None:
            self.events.feed.end_streams()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health flips to NOT_SERVING first, calls in flight get `grace` seconds."""
        if self._stopping:
            return
        self._stopping = True
        # Reports made just before finish first; shutdown then reports NOT_SERVING.
        # One that failed is logged, never a reason to stop only halfway.
        for failed in await asyncio.gather(*self._health_reports, return_exceptions=True):
            if isinstance(failed, BaseException):
                log.error("a health report failed", exc_info=failed)
        await self.health.enter_graceful_shutdown()
        if self.health_endpoint is not None:
            await self.health_endpoint.enter_graceful_shutdown()
        if self._server is not None:
            grace = self.settings.shutdown_grace_seconds if grace is None else grace
            # Watches may finish within the grace; those still open just before it
            # ends are answered SERVER_SHUTTING_DOWN, not cut off by gRPC without a word.
            ending = asyncio.get_running_loop().call_later(
                max(grace - WATCH_END_MARGIN_SECONDS, 0), self._end_streams
            )
            await self._server.stop(grace)
            ending.cancel()
        if self.intents is not None:
            await self.intents.stop()
        if self.events is not None:
            await self.events.stop()  # hands the producers' lead to another replica
        if self.relay is not None:
            await self.relay.stop()  # hands transactions in flight back to the database
        if self.chain is not None:
            await self.chain.stop()
        if self._rpc is not None:
            await self._rpc.close()
        if self.keys is not None:
            await self.keys.stop()  # flushes usage counts
        if self.database is not None:
            await self.database.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.localnet is not None:
            await self.localnet.stop()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        if self.health_endpoint is not None:
            await self.health_endpoint.stop()
        await self.telemetry.metrics.stop()
        if self._owns_telemetry:
            self.telemetry.shutdown()  # exports the last spans
        log.info("agent-staking stopped")
