"""Schemathesis against the running service: the OpenAPI document must tell the truth.

A real uvicorn on 127.0.0.1 serves the app (on SQLite and on the real PostgreSQL, where
database errors surface), and schemathesis sends every documented operation generated
requests, valid and invalid, with a valid API key. Every answer must be documented: no
server error, no undocumented status code, a body that conforms to its schema, the
documented content type, and a 405 with an ``Allow`` header listing every method of the path.

``APOS_FUZZ_EXAMPLES`` sets the examples per operation (a few here; ``make fuzz`` many more).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from apos.service.app import build_app
from apos.service.auth import Role, issue_key
from apos.service.bootstrap import build_services
from apos.settings import Settings

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("APOS_FUZZ_EXAMPLES", "5"))
# `make fuzz`: every phase for every key on every backend.
FULL = EXAMPLES > 5
FULL_ONLY = pytest.mark.skipif(not FULL, reason="in `make fuzz` only (APOS_FUZZ_EXAMPLES > 5)")
ALL_PHASES = "examples,coverage,fuzzing,stateful"
SEED = os.environ.get("APOS_FUZZ_SEED", "20261204")
# What "the document tells the truth" means, as schemathesis checks.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
)
ST = Path(sys.executable).with_name("st")


@dataclass
class Service:
    """A running service and the key schemathesis sends."""

    base_url: str
    token: str


def _serve(app: object) -> tuple[uvicorn.Server, threading.Thread, int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port


@contextmanager
def running_service(database_url: str, merchant_id: str | None) -> Iterator[Service]:
    """The service on uvicorn, with an admin key for every merchant or for ``merchant_id``."""
    settings = Settings(database_url=database_url, consumer_name="fuzz")
    services = build_services(settings)
    issued = issue_key("fuzz", Role.ADMIN, merchant_id, datetime.now(UTC))
    services.store.create_api_key(issued.record)
    server, thread, port = _serve(build_app(settings, services))
    try:
        yield Service(f"http://127.0.0.1:{port}", issued.token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        services.close()


def run_schemathesis(
    service: Service, tmp: Path, phases: str = ALL_PHASES
) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``service`` with :data:`EXAMPLES` examples per operation."""
    command = [
        str(ST),
        "run",
        f"{service.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {service.token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        phases,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=3600, cwd=tmp, check=False
    )


def test_every_answer_is_documented(database_url: str, tmp_path: Path) -> None:
    """An admin key reaches every operation, on SQLite and on PostgreSQL. The coverage phase
    (boundary values, every undocumented method of every path) does not depend on the
    database and is the slowest: in the suite it runs on SQLite only."""
    on_postgres = database_url.startswith("postgresql")
    phases = "examples,fuzzing,stateful" if on_postgres and not FULL else ALL_PHASES
    with running_service(database_url, None) as service:
        result = run_schemathesis(service, tmp_path, phases)
    assert result.returncode == 0, _failures(result)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, FULL_ONLY])]
)
def test_every_answer_to_a_merchant_scoped_key_is_documented(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A key scoped to one merchant: mostly 403 and 404 answers, which must be documented."""
    database_url = str(request.getfixturevalue(f"{backend}_url"))
    with running_service(database_url, "m_alpha") as service:
        result = run_schemathesis(service, tmp_path, ALL_PHASES if FULL else "fuzzing")
    assert result.returncode == 0, _failures(result)


def _failures(result: subprocess.CompletedProcess[str]) -> str:
    report = result.stdout
    start = report.find("FAILURES")
    return (report[start:] if start >= 0 else report)[-30000:] + result.stderr[-5000:]
