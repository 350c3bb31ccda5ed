"""Configuration: one `Settings` object, built once at start and passed down.

Sources, strongest first: command-line flags, `AGENT_STAKING_*` environment
variables, the optional TOML file (`--config` or `AGENT_STAKING_CONFIG_FILE`),
the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from solders.pubkey import Pubkey

ENV_PREFIX = "AGENT_STAKING_"


class Settings(BaseSettings):
    """Every setting of the service; environment names are `AGENT_STAKING_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    listen: str = "127.0.0.1:50051"
    """gRPC listen address, HOST:PORT (port 0 picks a free port)."""
    rpc_urls: list[str] = Field(default_factory=list)
    """Solana JSON-RPC endpoints, first = primary. Empty: start the embedded localnet."""
    rpc_timeout_seconds: float = 5.0
    """Upper bound of one Solana RPC call (always also bounded by the gRPC deadline)."""
    rpc_pool_size: int = 5
    """Keep-alive HTTP connections per Solana endpoint."""
    data_dir: Path = Path("./agent-staking-data")
    """Directory of the embedded state (SQLite database)."""

    service_fee_bps: int = Field(default=10, ge=0, le=10_000)
    """Service fee in basis points of the staked amount (floor); 0 = no fee instruction."""
    fee_recipient: str | None = None
    """Wallet receiving the service fee. Required with an external RPC when the fee is > 0;
    the embedded localnet derives and funds one."""
    default_vote_account: str | None = None
    """Vote account used when a stake request names none (embedded: the top-ranked validator)."""

    max_message_bytes: int = 1024 * 1024
    """Largest request or response message."""
    shutdown_grace_seconds: float = 10.0
    """How long calls in flight may finish after SIGTERM before they are cancelled."""
    blockhash_refresh_seconds: float = 2.0
    """How often the cached blockhash and slot are refreshed."""
    context_refresh_seconds: float = 30.0
    """How often rent, minimum delegation, epoch schedule and vote accounts are refreshed."""
    blockhash_min_remaining_blocks: int = 60
    """A cached blockhash is handed out only while at least this many blocks of validity remain."""

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

    @property
    def embedded_localnet(self) -> bool:
        return not self.rpc_urls

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
                env_prefix=ENV_PREFIX, extra="forbid", frozen=True, toml_file=path
            )

        cls = FileSettings
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    return cls(**clean)
