"""One typed settings object for the whole service, from ``APOS_*`` variables and a TOML file.

Precedence (highest first): constructor arguments, environment (``APOS_DATABASE_URL``, ...),
the TOML file named by ``APOS_CONFIG`` (flat keys, same names without the prefix), defaults.
The defaults are the embedded ones (SQLite file, in-process bus), so a newcomer needs nothing
installed; setting ``database_url`` / ``redis_url`` switches to PostgreSQL / Redis Streams.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

AutonomyMode = Literal["observe", "propose", "autonomous"]


def _default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Everything APOS can be configured with. Every field is ``APOS_<NAME>`` in the env."""

    model_config = SettingsConfigDict(env_prefix="APOS_", extra="forbid", frozen=True)

    # Storage and bus. The URL's scheme picks the adapter.
    database_url: str = "sqlite:///./apos.db"
    redis_url: str | None = None
    event_stream: str = Field(default="apos:events", min_length=1)
    consumer_group: str = Field(default="apos-ingest", min_length=1)
    consumer_name: str = Field(default_factory=_default_consumer_name, min_length=1)
    # A consumer's pending entries idle this long are taken over by another consumer.
    reclaim_idle_ms: int = Field(default=30_000, ge=100)
    stream_read_count: int = Field(default=1_000, ge=1, le=10_000)
    stream_block_ms: int = Field(default=1_000, ge=1)
    stream_maxlen: int = Field(default=1_000_000, ge=1_000)

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch_events: int = Field(default=5_000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # Hyperswitch: the profile's payment_response_hash_key; when set, webhooks must be signed.
    hyperswitch_webhook_secret: SecretStr | None = None

    # Routing. More connectors are learnt from events and from eligible lists in requests.
    connectors: tuple[str, ...] = ("stripe", "adyen", "checkout")
    engine_seed: int = 0
    # A TOML or JSON file holding an EngineConfig (policies per merchant, learner, breakers).
    routing_config: Path | None = None
    snapshot_interval_s: float = Field(default=60.0, gt=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    decision_flush_ms: int = Field(default=200, ge=10)
    # "wall": now is the wall clock. "event": now follows the newest event time learnt when
    # that is ahead (replays, accelerated simulations such as the demo).
    clock: Literal["wall", "event"] = "wall"

    # Behaviour.
    autonomy_mode: AutonomyMode = "propose"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        # psycopg 3 is the driver we ship; plain postgresql:// would pick psycopg2.
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _supported_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("connectors")
    @classmethod
    def _some_connector(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(v.strip().lower() for v in value if v.strip()))
        if not names:
            raise ValueError("name at least one connector")
        return names

    @field_validator("routing_config")
    @classmethod
    def _readable_config(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @property
    def applied_stream(self) -> str:
        """The stream every instance tails to learn from every stored event."""
        return f"{self.event_stream}:applied"

    @property
    def uses_postgres(self) -> bool:
        """True when the system of record is PostgreSQL rather than embedded SQLite."""
        return self.database_url.startswith("postgresql")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("APOS_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class SettingsError(Exception):
    """Raised at start when configuration is invalid; the message lists every bad value."""


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings`, turning validation failures into one readable message."""
    config_file = os.environ.get("APOS_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"APOS_CONFIG points at {config_file!r}, which is not a file")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            name = ".".join(str(p) for p in err["loc"])
            lines.append(f"  APOS_{name.upper()}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
