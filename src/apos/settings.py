"""One typed settings object for the whole service, from ``APOS_*`` variables and a TOML file.

Precedence (highest first): constructor arguments, environment (``APOS_DATABASE_URL``, ...),
the TOML file named by ``APOS_CONFIG`` (flat keys, same names without the prefix), defaults.
List-valued settings take a comma-separated list (``APOS_CONNECTORS=stripe,adyen``) or a JSON
array. Every bad value, and a TOML file that does not parse, is a :class:`SettingsError`.
The defaults are the embedded ones (SQLite file, in-process bus), so a newcomer needs nothing
installed; setting ``database_url`` / ``redis_url`` switches to PostgreSQL / Redis Streams.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from apos.core.event_time import EventTimeWindow

AutonomyMode = Literal["observe", "propose", "autonomous"]


class SettingsError(Exception):
    """Raised at start when configuration is invalid; the message lists every bad value."""


def _split_list(value: object) -> object:
    """A string (an env var) is a JSON array when it starts with ``[``, else comma-separated."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a valid JSON array ({exc})") from None
    return text.split(",")


# NoDecode stops the env source from insisting on JSON; _split_list takes either form.
StrList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_list)]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_list)]


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
    # The outbox of learning (docs/ARCHITECTURE.md, "Stored means learnt"): a stored batch
    # not published within outbox_grace_s (its instance died, or Redis failed) is published
    # by the relay of any instance. A published batch's marker lives outbox_marker_ttl_s; an
    # outbox row that cannot be deleted for longer than that may be published again.
    outbox_grace_s: float = Field(default=10.0, gt=0)
    outbox_marker_ttl_s: int = Field(default=86_400, ge=60)

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch_events: int = Field(default=5_000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # Hyperswitch: the profile's payment_response_hash_key; when set, webhooks must be signed.
    # Set but empty is refused (see _secret_not_empty).
    hyperswitch_webhook_secret: SecretStr | None = None

    # Routing. More connectors are learnt from events and from eligible lists in requests.
    connectors: StrList = ("stripe", "adyen", "checkout")
    engine_seed: int = 0
    # A TOML or JSON file holding an EngineConfig (policies per merchant, learner, breakers).
    routing_config: Path | None = None
    snapshot_interval_s: float = Field(default=60.0, gt=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    decision_flush_ms: int = Field(default=200, ge=10)
    # "wall": now is the wall clock. "event": now follows the newest event time learnt when
    # that is ahead (replays, accelerated simulations such as the demo).
    clock: Literal["wall", "event"] = "wall"
    # The accepted window of event time around receipt (apos.core.event_time): an event more
    # than event_max_future_s ahead is refused; one older than event_max_age_s is stored but
    # not learnt. With clock = "event" no clock moves past receipt + event_max_future_s.
    event_max_future_s: float = Field(default=300.0, gt=0)
    event_max_age_s: float = Field(default=7 * 86_400.0, gt=0)

    # Anomaly detection (apos.service.detection) and alerts (apos.adapters.alerts).
    detection_enabled: bool = True
    # A TOML or JSON file holding a DetectionConfig (thresholds of every detector).
    detection_config: Path | None = None
    # Generic JSON webhooks, signed with alert_webhook_secret (HMAC-SHA256; docs/api.md).
    alert_webhook_urls: StrList = ()
    alert_webhook_secret: SecretStr | None = None
    # Slack-compatible incoming webhooks: the URL is the credential, so it is a secret.
    alert_slack_webhook_urls: SecretList = ()
    # Transitions of lower severity are recorded, not alerted.
    alert_min_severity: Literal["info", "warning", "critical"] = "warning"
    alert_rate_per_minute: float = Field(default=30.0, gt=0)
    alert_queue_size: int = Field(default=1_000, ge=1)

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

    @field_validator("hyperswitch_webhook_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a blank secret rather than read it as unset.

        A blank value is nearly always a template variable that was not filled in: the
        operator meant webhooks to be signed, and no signature can match an empty key.
        Reading it as unset would silently switch webhooks to operator-key auth instead.
        """
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty; set the profile's payment_response_hash_key or unset it")
        return value

    @field_validator("alert_webhook_urls", "alert_slack_webhook_urls")
    @classmethod
    def _http_urls(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        for url in value:
            text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
            if not text.startswith(("http://", "https://")):
                raise ValueError("every alert sink must be an http:// or https:// URL")
        return value

    @field_validator("routing_config", "detection_config")
    @classmethod
    def _readable_config(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @property
    def event_time_window(self) -> EventTimeWindow:
        """The accepted window of event time (see ``event_max_future_s``)."""
        return EventTimeWindow(self.event_max_future_s, self.event_max_age_s)

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
            try:  # the source reads and parses the file here
                toml = TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                # tomllib's message ends with "(at line L, column C)".
                raise SettingsError(
                    f"invalid configuration:\n  APOS_CONFIG: {config_file} is not valid TOML: {exc}"
                ) from None
            sources.append(toml)
        return tuple(sources)


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
    except SourceError as exc:  # a value a source could not decode (e.g. bad JSON)
        raise SettingsError(f"invalid configuration:\n  {exc}") from None
