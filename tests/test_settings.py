"""Settings: env, TOML file, validation with every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from apos.settings import SettingsError, load_settings


def test_defaults_are_embedded() -> None:
    s = load_settings()
    assert s.database_url.startswith("sqlite") and s.redis_url is None
    assert not s.uses_postgres


def test_env_and_toml_with_env_winning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "apos.toml"
    config.write_text(
        'database_url = "postgresql://u@db/apos"\nport = 9000\nredis_url = "redis://cache:6379/0"\n'
    )
    monkeypatch.setenv("APOS_CONFIG", str(config))
    monkeypatch.setenv("APOS_PORT", "9100")
    s = load_settings()
    assert s.database_url == "postgresql+psycopg://u@db/apos" and s.uses_postgres
    assert s.port == 9100 and s.redis_url == "redis://cache:6379/0"


def test_every_bad_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOS_PORT", "70000")
    monkeypatch.setenv("APOS_REDIS_URL", "http://nope")
    monkeypatch.setenv("APOS_AUTONOMY_MODE", "yolo")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    for name in ("APOS_PORT", "APOS_REDIS_URL", "APOS_AUTONOMY_MODE"):
        assert name in message


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOS_CONFIG", "/nonexistent/apos.toml")
    with pytest.raises(SettingsError, match="/nonexistent/apos.toml"):
        load_settings()


def test_unknown_toml_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "apos.toml"
    config.write_text("databse_url = 'sqlite:///x.db'\n")
    monkeypatch.setenv("APOS_CONFIG", str(config))
    with pytest.raises(SettingsError, match="DATABSE_URL"):
        load_settings()


def _config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> Path:
    """An APOS_CONFIG file holding ``content``."""
    config = tmp_path / "apos.toml"
    config.write_bytes(content)
    monkeypatch.setenv("APOS_CONFIG", str(config))
    return config


def test_malformed_toml_names_the_file_and_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config_file(tmp_path, monkeypatch, b"port = 9000\ndatabase_url = = 'x'\n")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "APOS_CONFIG" in message and str(config) in message
    assert "line 2, column 16" in message


def test_toml_that_is_not_utf8_is_a_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_file(tmp_path, monkeypatch, b"port = 9000\n\xff\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()


@pytest.mark.parametrize(
    "value",
    ["stripe,adyen", " Stripe , adyen,, ", '["stripe", "adyen"]', "stripe,adyen,stripe"],
)
def test_list_settings_take_commas_or_json(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOS_CONNECTORS", value)
    assert load_settings().connectors == ("stripe", "adyen")


def test_list_settings_from_toml_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_file(tmp_path, monkeypatch, b'connectors = ["worldpay", "adyen"]\n')
    assert load_settings().connectors == ("worldpay", "adyen")
    assert load_settings(connectors=["checkout"]).connectors == ("checkout",)


@pytest.mark.parametrize("value", ["", " , ", '["stripe"', "[1, 2]"])
def test_bad_list_settings_name_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOS_CONNECTORS", value)
    with pytest.raises(SettingsError, match="APOS_CONNECTORS"):
        load_settings()


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_webhook_secret_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOS_HYPERSWITCH_WEBHOOK_SECRET", value)
    with pytest.raises(SettingsError, match="APOS_HYPERSWITCH_WEBHOOK_SECRET: .*empty"):
        load_settings()


def test_webhook_secret_set_or_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().hyperswitch_webhook_secret is None
    monkeypatch.setenv("APOS_HYPERSWITCH_WEBHOOK_SECRET", "hash-key")
    secret = load_settings().hyperswitch_webhook_secret
    assert secret is not None and secret.get_secret_value() == "hash-key"
