"""The ``apos`` command line: file ingestion, migrations, keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apos.adapters.db import SqlStore
from apos.cli.main import app
from tests.service.conftest import make_event

runner = CliRunner()


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APOS_DATABASE_URL", database_url)
    return database_url


def test_ingest_jsonl_is_idempotent_and_dead_letters_bad_lines(env: str, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(make_event(i)) for i in range(2500)]
    lines.insert(10, "{broken")
    lines.insert(20, json.dumps(make_event(99999, currency="QQQ")))
    path.write_text("\n".join(lines) + "\n")
    first = runner.invoke(app, ["ingest", str(path)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {
        "accepted": 2500,
        "duplicates": 0,
        "rejected": 2,
    }
    second = runner.invoke(app, ["ingest", str(path)])
    assert json.loads(second.stdout.strip().splitlines()[-1])["duplicates"] == 2500
    store = SqlStore(env)
    assert store.count_events() == 2500
    letters = store.list_dead_letters(None, 10, None).items
    assert any("line 11" in d.reason for d in letters)
    store.close()


def test_ingest_csv(env: str, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = [make_event(i) for i in range(50)]
    rows[3]["error_code"] = None
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "error_code"])
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["accepted"] == 50
    store = SqlStore(env)
    event = store.get_event("evt_3")
    assert event is not None and event.amount == 1999 and event.latency_ms == 321.5
    store.close()


def test_keys_create_list_revoke(env: str) -> None:
    created = runner.invoke(
        app, ["keys", "create", "--name", "ops", "--role", "operator", "--merchant-id", "m_alpha"]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("apos_key_")
    key_id = "_".join(token.split("_")[1:3])
    listed = runner.invoke(app, ["keys", "list"])
    assert key_id in listed.stdout and token not in listed.stdout
    store = SqlStore(env)
    record = store.get_api_key(key_id)
    assert record is not None and record.key_hash != token and record.merchant_id == "m_alpha"
    store.close()
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0  # idempotent
    assert runner.invoke(app, ["keys", "revoke", "key_000000000000"]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--role", "root"])
    assert bad.exit_code == 2


def test_db_upgrade_and_bad_settings(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setenv("APOS_DATABASE_URL", "mysql://nope")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2 and "APOS_DATABASE_URL" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("APOS_CONFIG", None, "not valid TOML"),
        ("APOS_CONNECTORS", '["stripe"', "APOS_CONNECTORS"),
        ("APOS_HYPERSWITCH_WEBHOOK_SECRET", "", "APOS_HYPERSWITCH_WEBHOOK_SECRET"),
    ],
)
def test_settings_errors_are_a_clean_exit(
    env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str | None,
    expected: str,
) -> None:
    if value is None:
        config = tmp_path / "apos.toml"
        config.write_text("port = = 1\n")
        value = str(config)
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["db", "upgrade"])
    # The console wraps long lines; compare with the line breaks taken out.
    assert result.exit_code == 2 and expected in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_ingest_csv_exported_with_a_byte_order_mark(env: str, tmp_path: Path) -> None:
    # Spreadsheets save "CSV UTF-8" with a BOM before the first column name.
    path = tmp_path / "export.csv"
    rows = [make_event(i) for i in range(5)]
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfevent_id,")
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "accepted": 5,
        "duplicates": 0,
        "rejected": 0,
    }


def test_ingest_shows_a_progress_bar_on_stderr(env: str, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(make_event(i)) for i in range(30)) + "\n")
    result = runner.invoke(app, ["ingest", str(path), "--batch-size", "10"])
    assert result.exit_code == 0, result.output
    assert "ingest events.jsonl" in result.stderr and "100%" in result.stderr
    # The totals stay alone on stdout, so scripts can parse them.
    assert json.loads(result.stdout) == {"accepted": 30, "duplicates": 0, "rejected": 0}
