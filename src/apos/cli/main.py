"""The ``apos`` command line: serve, ingest files, migrate, manage keys."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from apos.cli.detect import detect as detect_command
from apos.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from apos.core.events import PaymentEvent

app = typer.Typer(
    help="APOS: autonomous payment orchestration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _store(settings: Settings) -> Any:
    from apos.adapters.db import SqlStore, upgrade_database

    upgrade_database(settings.database_url)
    return SqlStore(settings.database_url)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Run the HTTP service (embedded SQLite and in-process bus unless configured)."""
    import uvicorn

    from apos.service.logs import configure_logging

    settings = _settings(host=host, port=port)
    configure_logging(settings.log_level, settings.log_json)
    store = _store(settings)
    ensure_admin_key(store)
    store.close()
    if workers > 1:
        if not settings.uses_postgres:
            console.print("[red]--workers > 1 needs PostgreSQL (APOS_DATABASE_URL)[/red]")
            raise typer.Exit(2)
        uvicorn.run(
            "apos.service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_config=None,
        )
        return
    from apos.service.app import build_app

    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_config=None)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    speed: Annotated[float, typer.Option(min=1.0, help="Simulated seconds per second.")] = 20.0,
    scenario: Annotated[str, typer.Option(help="Scenario name or TOML file.")] = "demo",
    keep_serving: Annotated[bool, typer.Option(help="Keep the API up after the run.")] = True,
) -> None:
    """Start APOS on embedded defaults and drive a built-in scenario through it, live."""
    from apos.cli.demo import run_demo

    raise typer.Exit(
        run_demo(
            host=host,
            port=port,
            speed=speed,
            scenario_name=scenario,
            keep_serving=keep_serving,
            console=Console(),
        )
    )


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="Scenario name (scenarios/) or TOML file.")],
    payments: Annotated[int | None, typer.Option(help="Scale the run to this many.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = Path("reports"),
    url: Annotated[str | None, typer.Option(help="Drive a running APOS over HTTP instead.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="APOS_API_KEY", help="Operator key for --url.")
    ] = None,
    speed: Annotated[float | None, typer.Option(help="With --url: x real time.")] = None,
    detect: Annotated[
        bool,
        typer.Option(
            help="List the anomalies APOS's detectors raise (a Monitor fed the APOS lane's "
            "outcomes; with --url, the service's own records)."
        ),
    ] = True,
) -> None:
    """Run a scenario in simulated time against the Engine and the baselines (or, with
    --url, against a running APOS over HTTP) and print the report table."""
    from apos.sim import format_table, load_scenario, render_report, run_http, run_scenario

    try:
        loaded = load_scenario(scenario)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if url:
        if not api_key:
            console.print("[red]--url needs --api-key (or APOS_API_KEY)[/red]")
            raise typer.Exit(2)
        result = run_http(
            loaded, url, api_key, speed=speed, payments=payments, seed=seed, anomalies=detect
        )
    else:
        result = run_scenario(loaded, payments=payments, seed=seed, detect=detect)
    typer.echo(format_table(result))
    console.print(f"report: {render_report(result, report_dir)}")


app.command("detect")(detect_command)


def ensure_admin_key(store: Any) -> str | None:
    """On a store with no keys, create an admin key and print it once (to the terminal,
    never to the log) so a newcomer can call the API."""
    from apos.adapters.ports import AuditEntry
    from apos.service.auth import Role, issue_key

    if store.list_api_keys():
        return None
    issued = issue_key("bootstrap-admin", Role.ADMIN, None, datetime.now(UTC))
    store.create_api_key(issued.record)
    store.append_audit(
        [
            AuditEntry(
                actor="cli",
                action="api_key.create",
                target=issued.record.id,
                details={"role": "admin", "bootstrap": True},
            )
        ]
    )
    console.print(
        f"[bold]No API keys existed; created an admin key (shown once):[/bold]\n  {issued.token}"
    )
    return issued.token


class _CountingLines:
    """Iterates a text file's lines and counts the bytes read, for the progress bar."""

    def __init__(self, handle: io.TextIOBase) -> None:
        self._handle = handle
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._handle:
            self.bytes_read += len(line.encode("utf-8", errors="replace"))
            yield line


def _read_jsonl(handle: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, _Unparseable(line.rstrip("\n"), f"line {number}: invalid JSON: {exc}")


def _read_csv(handle: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, row in enumerate(csv.DictReader(handle), start=2):
        yield number, {k: v for k, v in row.items() if k and v not in (None, "")}


class _Unparseable:
    def __init__(self, raw: str, reason: str) -> None:
        self.raw, self.reason = raw, reason


@app.command()
def ingest(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSON Lines (.jsonl/.ndjson) or CSV (.csv)",
        ),
    ],
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1_000,
    file_format: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv (default: by suffix)")
    ] = None,
) -> None:
    """Ingest a file of payment events into the store, with a progress bar.

    Idempotent by event_id: re-running on the same file stores nothing twice. Lines that
    cannot be parsed go to the dead-letter store with the line number and reason.

    With APOS_REDIS_URL set, the newly stored events are also appended to the applied
    stream, as the service does, so running instances learn them ("published" in the
    totals; if this process dies first, a running instance's outbox relay publishes them).
    On embedded defaults (no Redis) a running server learns them from the outbox only at
    its next start: to teach it now, POST the events to its /v1/events.
    """
    from apos.adapters.db.outbox import OutboxStore
    from apos.service.applied import AppliedPublisher
    from apos.service.ingest import Ingestor
    from apos.service.metrics import Metrics

    kind = (file_format or ("csv" if file.suffix.lower() == ".csv" else "jsonl")).lower()
    if kind not in ("csv", "jsonl"):
        console.print(f"[red]--format must be jsonl or csv, not {kind!r}[/red]")
        raise typer.Exit(2)
    settings = _settings()
    publisher = AppliedPublisher(settings) if settings.redis_url else None
    if publisher is not None and not publisher.ping():
        # Stored now, they would never reach the running instances: a rerun skips them.
        publisher.close()
        console.print(f"[red]Redis at {_redacted(settings.redis_url or '')} is unreachable[/red]")
        raise typer.Exit(2)
    store = _store(settings)
    if publisher is not None:
        publisher.close()  # reopened with the outbox, now that the store exists
        publisher = AppliedPublisher(settings, OutboxStore(store.engine))
    ingestor = Ingestor(store, Metrics(), settings.event_time_window)
    source = f"file:{file.name}"
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    if publisher is not None:
        totals["published"] = 0
        send = publisher

        def publish(events: Sequence[PaymentEvent], outbox_id: int | None) -> None:
            send.publish_batch(events, outbox_id)
            totals["published"] += len(events)

        ingestor.add_batch_listener(publish)
    size = file.stat().st_size
    # utf-8-sig: spreadsheet "CSV UTF-8" exports start with a BOM, which would otherwise
    # glue itself to the first column name and make every row fail validation.
    with (
        file.open(encoding="utf-8-sig", errors="replace", newline="") as handle,
        Progress(
            TextColumn("[bold]ingest[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task(file.name, total=size)
        lines = _CountingLines(handle)
        rows = _read_csv(lines) if kind == "csv" else _read_jsonl(lines)
        batch: list[Any] = []

        def flush() -> None:
            report = ingestor.ingest(batch, source)
            totals["accepted"] += report.accepted
            totals["duplicates"] += report.duplicates
            totals["rejected"] += len(report.rejected)
            batch.clear()
            progress.update(task, completed=lines.bytes_read)

        for _number, payload in rows:
            if isinstance(payload, _Unparseable):
                ingestor.dead_letter(payload.raw, payload.reason, source)
                totals["rejected"] += 1
                continue
            batch.append(payload)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        progress.update(task, completed=size)
    if publisher is not None:
        publisher.close()  # deletes the outbox rows of what it published
    store.close()
    typer.echo(orjson.dumps(totals).decode())
    if totals["rejected"]:
        console.print(f"{totals['rejected']} rejected: see GET /v1/dead-letters")
    if publisher is not None and totals["published"] < totals["accepted"]:
        unsent = totals["accepted"] - totals["published"]
        console.print(
            f"[red]{unsent} stored events could not be published to {publisher.stream} "
            "yet: they stay in the outbox, and a running instance's relay publishes "
            "them[/red]"
        )
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to the configured database."""
    from apos.adapters.db import upgrade_database

    settings = _settings()
    upgrade_database(settings.database_url)
    typer.echo(f"database at head: {_redacted(settings.database_url)}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "viewer",
    merchant_id: Annotated[str | None, typer.Option(help="Scope to one merchant.")] = None,
) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    from pydantic import ValidationError

    from apos.adapters.ports import AuditEntry
    from apos.core.events import field_errors
    from apos.service.api.keys import KeyCreate
    from apos.service.auth import Role, issue_key

    try:
        parsed = Role.parse(role)
        # The API's rules (no card number in a name or scope), without echoing the value.
        KeyCreate(name=name, role=parsed.name.lower(), merchant_id=merchant_id)
    except ValidationError as exc:
        for error in field_errors(exc):
            console.print(f"[red]--{error.field.replace('_', '-')}: {error.message}[/red]")
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    store = _store(_settings())
    issued = issue_key(name, parsed, merchant_id, datetime.now(UTC))
    store.create_api_key(issued.record)
    store.append_audit(
        [
            AuditEntry(
                actor="cli",
                action="api_key.create",
                target=issued.record.id,
                merchant_id=merchant_id,
                details={"role": parsed.name.lower(), "name": name},
            )
        ]
    )
    store.close()
    console.print(
        f"created {issued.record.id} ({parsed.name.lower()}"
        f"{', merchant ' + merchant_id if merchant_id else ''}); the key, shown once:"
    )
    typer.echo(issued.token)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, roles, scopes; never secrets)."""
    store = _store(_settings())
    rows = [
        (
            r.id,
            r.name,
            r.role,
            r.merchant_id or "*",
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "",
        )
        for r in store.list_api_keys()
    ]
    store.close()
    header = ("id", "name", "role", "merchant", "created", "revoked", "last used")
    if not sys.stdout.isatty():  # scripts get tab-separated lines, never wrapped
        for row in (header, *rows):
            typer.echo("\t".join(row))
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key; running services stop accepting it within 5 seconds."""
    from apos.adapters.ports import AuditEntry

    store = _store(_settings())
    if not store.revoke_api_key(key_id, datetime.now(UTC)):
        store.close()
        console.print(f"[red]no active key {key_id!r}[/red]")
        raise typer.Exit(1)
    store.append_audit([AuditEntry(actor="cli", action="api_key.revoke", target=key_id)])
    store.close()
    typer.echo(f"revoked {key_id}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
