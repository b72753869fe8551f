"""Alert sinks against real local HTTP servers: signed webhooks, Slack payloads, dedupe,
rate limits, retries with backoff, and sinks that are down or slow."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from apos.adapters.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    AlertDispatcher,
    RetryPolicy,
    SlackSink,
    TokenBucket,
    WebhookSink,
)

FAST_RETRY = RetryPolicy(attempts=4, base_delay_s=0.02, max_delay_s=0.1)


@dataclass
class Receiver:
    """A local HTTP server that records what it was sent and answers as told."""

    url: str
    requests: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 200
    delay_s: float = 0.0

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.delay_s:
                time.sleep(state.delay_s)
            state.requests.append((dict(self.headers), body, time.monotonic()))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more


def alert(record_id: str = "a1", transition: str = "opened", severity: str = "critical") -> Alert:
    return Alert(
        transition,
        {
            "id": record_id,
            "anomaly_type": "HighFailureRate",
            "severity": severity,
            "connector": "adyen",
            "merchant_id": None,
            "segment": None,
            "score": 0.999,
            "started_at": "2026-12-01T10:00:00+00:00",
            "evidence": {"metric": "success_rate", "observed": 0.4, "baseline": 0.97},
        },
    )


class Counts:
    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def dispatcher(self, sinks: list[Any], **kwargs: Any) -> AlertDispatcher:
        kwargs.setdefault("retry", FAST_RETRY)
        return AlertDispatcher(
            sinks,
            on_delivered=self.delivered.append,
            on_failed=lambda sink, reason: self.failed.append((sink, reason)),
            **kwargs,
        )


def test_webhook_body_is_signed_so_a_receiver_can_verify_it(receiver: Receiver) -> None:
    counts = Counts()
    alerts = counts.dispatcher([WebhookSink(receiver.url, "s3cret")])
    alerts.start()
    alerts.submit(alert())
    assert alerts.drain(5)
    alerts.stop()
    ((headers, body, _),) = receiver.requests
    # What a receiver does (docs/api.md, "Alerts"): HMAC-SHA256 of "<timestamp>.<raw body>".
    timestamp = headers[TIMESTAMP_HEADER]
    expected = hmac.new(b"s3cret", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], "v1=" + expected)
    assert abs(int(timestamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["event"] == "anomaly.opened"
    assert payload["anomaly"]["id"] == "a1"
    assert headers["X-APOS-Alert-Id"] == payload["id"]
    assert counts.delivered == [alerts.sinks[0]] and counts.failed == []


def test_slack_payload_has_text_and_blocks(receiver: Receiver) -> None:
    alerts = Counts().dispatcher([SlackSink(receiver.url)])
    alerts.start()
    alerts.submit(alert(transition="resolved"))
    assert alerts.drain(5)
    alerts.stop()
    (payload,) = receiver.bodies
    assert "HighFailureRate resolved" in payload["text"] and "adyen" in payload["text"]
    assert payload["blocks"][0]["text"]["text"] == payload["text"]


def test_one_alert_per_transition_however_often_it_is_submitted(receiver: Receiver) -> None:
    alerts = Counts().dispatcher([WebhookSink(receiver.url)])
    alerts.start()
    for _ in range(5):
        alerts.submit(alert())
    alerts.submit(alert(transition="resolved"))
    assert alerts.drain(5)
    alerts.stop()
    assert [b["event"] for b in receiver.bodies] == ["anomaly.opened", "anomaly.resolved"]


def test_server_errors_are_retried_with_backoff_and_client_errors_are_not(
    receiver: Receiver,
) -> None:
    counts = Counts()
    receiver.statuses = [503, 500, 200, 400]
    alerts = counts.dispatcher([WebhookSink(receiver.url)])
    alerts.start()
    alerts.submit(alert("a1"))
    assert alerts.drain(5)
    alerts.submit(alert("a2"))
    assert alerts.drain(5)
    alerts.stop()
    ids = [b["anomaly"]["id"] for b in receiver.bodies]
    assert ids == ["a1", "a1", "a1", "a2"]  # a2 got a 400: given up at once
    assert len(counts.delivered) == 1 and [r for _, r in counts.failed] == ["HTTP 400"]


def test_a_dead_sink_fails_after_its_retries_and_slows_neither_caller_nor_others(
    receiver: Receiver,
) -> None:
    counts = Counts()
    dead = WebhookSink(closed_port_url(), timeout_s=0.5)
    alerts = counts.dispatcher([dead, WebhookSink(receiver.url)])
    alerts.start()
    started = time.perf_counter()
    for i in range(20):
        alerts.submit(alert(f"a{i}"))
    submit_s = time.perf_counter() - started
    assert submit_s < 0.05  # the caller never waits on a sink
    deadline = time.monotonic() + 10
    while len(receiver.requests) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The live sink got its burst while the dead one was still retrying its first alert.
    assert len(receiver.requests) >= 10
    alerts.drain(10)
    alerts.stop()
    assert {sink for sink, _ in counts.failed} == {dead.name}


def test_a_slow_sink_delays_only_its_own_queue_which_drops_and_counts_overflow(
    receiver: Receiver,
) -> None:
    counts = Counts()
    receiver.delay_s = 0.3
    slow = WebhookSink(receiver.url, timeout_s=5)
    alerts = counts.dispatcher([slow], queue_size=2, burst=100, rate_per_minute=6000)
    alerts.start()
    started = time.perf_counter()
    for i in range(10):
        alerts.submit(alert(f"a{i}"))
    assert time.perf_counter() - started < 0.05
    assert alerts.drain(10)
    dropped = [reason for _, reason in counts.failed if reason == "queue_full"]
    assert len(dropped) + len(counts.delivered) == 10
    assert 1 <= len(counts.delivered) <= 3 and len(dropped) >= 7
    # A dropped alert is not remembered as sent: offered again once there is room, it goes.
    sent = {b["anomaly"]["id"] for b in receiver.bodies}
    first_dropped = next(f"a{i}" for i in range(10) if f"a{i}" not in sent)
    alerts.submit(alert(first_dropped))
    assert alerts.drain(10)
    alerts.stop()
    assert first_dropped in {b["anomaly"]["id"] for b in receiver.bodies}


def test_rate_limit_spaces_deliveries_after_the_burst(receiver: Receiver) -> None:
    alerts = Counts().dispatcher([WebhookSink(receiver.url)], burst=2, rate_per_minute=600)
    alerts.start()
    for i in range(4):
        alerts.submit(alert(f"a{i}"))
    assert alerts.drain(5)
    alerts.stop()
    times = [t for _, _, t in receiver.requests]
    assert len(times) == 4
    # Two at once, then one per 0.1 s (600 a minute).
    assert times[2] - times[0] >= 0.08 and times[3] - times[2] >= 0.08


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, capacity=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.delay() == pytest.approx(0.5)
    now[0] = 1.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_slack_text_cannot_be_steered_by_a_value_from_an_event() -> None:
    from apos.adapters.alerts import slack_message

    hostile = alert()
    hostile.anomaly["segment"] = "fingerprint=fp` <!channel> <https://evil.example|click>"
    text = json.dumps(slack_message(hostile))
    assert "<!channel>" not in text and "<https://evil" not in text
    assert "fp` " not in text
