"""The ``apos`` command line: file ingestion, migrations, keys."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apos.adapters.db import SqlStore
from apos.cli.main import app
from apos.service.bootstrap import build_services
from apos.settings import Settings
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


def _final_and_pending(count: int) -> list[dict[str, object]]:
    """``count`` events on distinct payments: 4 in 5 final, the rest pending or 3DS."""
    now = time.time() - 1
    statuses = ("succeeded", "failed", "authorized", "succeeded", "pending")
    events = []
    for i in range(count):
        status = statuses[i % 5]
        if status == "pending" and i % 2:
            status = "requires_action"
        events.append(make_event(i, connector="adyen", status=status, occurred_at=now))
    return events


@pytest.mark.redis
@pytest.mark.postgres
def test_ingest_teaches_running_instances_through_the_applied_stream(
    postgres_url: str,
    redis_url: str,
    stream_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = build_services(
        Settings(
            database_url=postgres_url,
            redis_url=redis_url,
            event_stream=stream_name,
            stream_block_ms=50,
            consumer_name="running",
        )
    )
    running.start()
    try:
        learned = running.routing.events_learned
        events = _final_and_pending(250)
        final = sum(e["status"] in ("succeeded", "authorized", "failed") for e in events)
        assert final == 200
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
        monkeypatch.setenv("APOS_DATABASE_URL", postgres_url)
        monkeypatch.setenv("APOS_REDIS_URL", redis_url)
        monkeypatch.setenv("APOS_EVENT_STREAM", stream_name)

        result = runner.invoke(app, ["ingest", str(path), "--batch-size", "64"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "accepted": 250,
            "duplicates": 0,
            "rejected": 0,
            "published": 250,
        }
        deadline = time.time() + 10
        while running.routing.events_learned < learned + final:
            assert time.time() < deadline, running.routing.events_learned - learned
            time.sleep(0.05)
        time.sleep(0.3)
        assert running.routing.events_learned == learned + final  # non-final: not learnt

        again = runner.invoke(app, ["ingest", str(path)])  # nothing new: nothing published
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["published"] == 0
        time.sleep(0.3)
        assert running.routing.events_learned == learned + final
    finally:
        running.close()


def test_ingest_refuses_to_start_when_the_configured_redis_is_down(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(make_event(1)) + "\n")
    monkeypatch.setenv("APOS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("APOS_REDIS_URL", "redis://127.0.0.1:1/0")
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2
    assert "unreachable" in result.stderr
    store = SqlStore(sqlite_url)
    assert store.count_events() == 0  # stored now, they could never be learnt by the others
    store.close()
