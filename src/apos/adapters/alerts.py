"""Alert sinks: where people are told that an anomaly opened, escalated or resolved.

Two sinks behind :class:`AlertSink`:

- :class:`WebhookSink`, a generic JSON webhook. The body is signed so a receiver can check
  it came from APOS and was not replayed: ``X-APOS-Timestamp`` is the send time (Unix
  seconds) and ``X-APOS-Signature`` is ``v1=`` + the hex HMAC-SHA256, keyed by the shared
  secret, of ``"<timestamp>.<raw body>"``. A receiver recomputes it over the raw bytes,
  compares in constant time and refuses a timestamp more than a few minutes old
  (``docs/api.md``, "Alerts").
- :class:`SlackSink`, a Slack-compatible incoming webhook (``text`` and ``blocks``).

:class:`AlertDispatcher` delivers from one background thread per sink, each with a bounded
queue: the caller (the detection writer) never waits, and a sink that is down or slow delays
only its own queue (which drops, and counts, what does not fit). Per sink, alerts are
deduplicated by id (one per incident transition: ``<record id>:<transition>:<severity>``),
rate-limited by a token bucket and retried with exponential backoff and full jitter.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "AlertDispatcher",
    "AlertSink",
    "SlackSink",
    "TokenBucket",
    "WebhookSink",
    "sign",
]

log = logging.getLogger("apos.adapters.alerts")

SIGNATURE_HEADER = "X-APOS-Signature"
TIMESTAMP_HEADER = "X-APOS-Timestamp"


@dataclass(frozen=True, slots=True)
class Alert:
    """One incident transition to tell people about.

    ``transition`` is ``opened``, ``escalated`` or ``resolved``; ``anomaly`` the record as
    the API shows it (:meth:`AnomalyRecord.to_dict`).
    """

    transition: str
    anomaly: Mapping[str, Any]

    @property
    def id(self) -> str:
        """The deduplication key: one alert per record, transition and severity."""
        return f"{self.anomaly['id']}:{self.transition}:{self.anomaly.get('severity')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": f"anomaly.{self.transition}",
            "anomaly": dict(self.anomaly),
        }


class AlertDeliveryError(Exception):
    """A delivery failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class AlertSink(Protocol):
    """Somewhere alerts go. ``send`` delivers one or raises :class:`AlertDeliveryError`."""

    name: str

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-APOS-Signature`` value of ``body`` sent at ``timestamp``.

    >>> sign(b"s3cret", 1700000000, b'{"a":1}')[:15]
    'v1=1698a50bc74d'
    """
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _sink_name(kind: str, url: str) -> str:
    # Host and port only: a Slack webhook's path is its secret, and names end up in metrics.
    parts = urlsplit(url)
    return f"{kind}:{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


class _HttpSink:
    kind = "http"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.name = _sink_name(self.kind, url)
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            response = self._client.post(
                self.url, content=body, headers={"Content-Type": "application/json", **headers}
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out: the sink may come back
            raise AlertDeliveryError(f"{type(exc).__name__}", retryable=True) from None
        if response.status_code < 300:
            return
        retry_after = _retry_after(response.headers.get("Retry-After"))
        retryable = response.status_code == 429 or response.status_code >= 500
        raise AlertDeliveryError(f"HTTP {response.status_code}", retryable, retry_after)

    def close(self) -> None:
        self._client.close()


class WebhookSink(_HttpSink):
    """A generic JSON webhook; the body is :meth:`Alert.to_dict` plus ``sent_at``, signed
    with HMAC-SHA256 when a secret is set (see the module docstring)."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, timeout_s)
        self._secret = secret.encode() if secret else None
        self._clock = clock

    def send(self, alert: Alert) -> None:
        timestamp = int(self._clock())
        body = orjson.dumps({**alert.to_dict(), "sent_at": timestamp})
        headers = {TIMESTAMP_HEADER: str(timestamp), "X-APOS-Alert-Id": alert.id}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        self._post(body, headers)


class SlackSink(_HttpSink):
    """A Slack-compatible incoming webhook: a one-line ``text`` and a few ``blocks``."""

    kind = "slack"

    def send(self, alert: Alert) -> None:
        self._post(orjson.dumps(slack_message(alert)), {})


_ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":white_circle:"}


def _slack_escape(value: str) -> str:
    """Slack's control characters escaped, backticks dropped: a value from an event must
    not close the code span around it or write ``<!channel>`` or a link."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def slack_message(alert: Alert) -> dict[str, Any]:
    """The Slack payload of ``alert``."""
    a = alert.anomaly
    entity = (
        ", ".join(
            f"{name} `{_slack_escape(str(a[key]))}`"
            for name, key in (
                ("merchant", "merchant_id"),
                ("connector", "connector"),
                ("segment", "segment"),
            )
            if a.get(key)
        )
        or "all traffic"
    )
    icon = (
        ":white_check_mark:"
        if alert.transition == "resolved"
        else _ICONS.get(str(a.get("severity")), "")
    )
    text = f"{icon} {a.get('anomaly_type')} {alert.transition} ({a.get('severity')}): {entity}"
    evidence = a.get("evidence") or {}
    facts = (
        f"*{evidence.get('metric', 'metric')}*: observed {evidence.get('observed')}, "
        f"baseline {evidence.get('baseline')} ({evidence.get('test', '')}); "
        f"score {a.get('score')}; started {a.get('started_at')}; id `{a.get('id')}`"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]},
        ],
    }


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class TokenBucket:
    """At most ``capacity`` at once, refilled at ``rate_per_s``; ``wait`` blocks for one.

    >>> bucket = TokenBucket(rate_per_s=1.0, capacity=2, clock=lambda: 0.0)
    >>> bucket.take(), bucket.take(), bucket.take()
    (True, True, False)
    """

    def __init__(
        self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt ``n`` (from 1) waits a uniform draw in
    ``[0, min(max_delay_s, base_delay_s * 2**(n-1))]`` before the next (AWS architecture
    blog, "Exponential Backoff And Jitter", 2015)."""

    attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


class _SinkWorker:
    def __init__(
        self,
        sink: AlertSink,
        capacity: int,
        bucket: TokenBucket,
        retry: RetryPolicy,
        on_delivered: Callable[[str], None],
        on_failed: Callable[[str, str], None],
    ) -> None:
        self.sink = sink
        self.queue: queue.Queue[Alert] = queue.Queue(maxsize=capacity)
        self._bucket = bucket
        self._retry = retry
        self._delivered = on_delivered
        self._failed = on_failed
        self._stop = threading.Event()
        self._rng = random.Random()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name=f"alerts-{sink.name}", daemon=True)

    def offer(self, alert: Alert) -> None:
        if alert.id in self._seen:
            return
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            # Not remembered as sent: offered again (the incident's next change), it goes.
            self._failed(self.sink.name, "queue_full")
            return
        self._seen[alert.id] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                alert = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(alert)
            finally:
                self.queue.task_done()

    def _deliver(self, alert: Alert) -> None:
        wait = self._bucket.delay()
        while wait > 0 and not self._stop.wait(wait):
            wait = self._bucket.delay()
        self._bucket.take()
        for attempt in range(1, self._retry.attempts + 1):
            try:
                self.sink.send(alert)
            except AlertDeliveryError as exc:
                if not exc.retryable or attempt == self._retry.attempts:
                    self._failed(self.sink.name, str(exc))
                    return
                pause = max(self._retry.delay(attempt, self._rng), exc.retry_after or 0.0)
                if self._stop.wait(min(pause, self._retry.max_delay_s)):
                    self._failed(self.sink.name, "shutdown")
                    return
            except Exception as exc:  # a bug in a sink must not kill its thread
                log.exception("alert sink %s raised", self.sink.name)
                self._failed(self.sink.name, type(exc).__name__)
                return
            else:
                self._delivered(self.sink.name)
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.sink.close()


class AlertDispatcher:
    """Fans alerts out to sinks, each on its own thread (see the module docstring).

    ``on_delivered(sink)`` and ``on_failed(sink, reason)`` count outcomes (metrics).
    """

    def __init__(
        self,
        sinks: list[AlertSink],
        *,
        queue_size: int = 1_000,
        rate_per_minute: float = 30.0,
        burst: int = 10,
        retry: RetryPolicy | None = None,
        on_delivered: Callable[[str], None] = lambda sink: None,
        on_failed: Callable[[str, str], None] = lambda sink, reason: None,
    ) -> None:
        def failed(sink: str, reason: str) -> None:
            log.warning("alert not delivered: sink=%s reason=%s", sink, reason)
            on_failed(sink, reason)

        self._workers = [
            _SinkWorker(
                sink,
                queue_size,
                TokenBucket(rate_per_minute / 60.0, burst),
                retry or RetryPolicy(),
                on_delivered,
                failed,
            )
            for sink in sinks
        ]
        self._started = False

    @property
    def sinks(self) -> list[str]:
        return [w.sink.name for w in self._workers]

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for every sink; never blocks."""
        for worker in self._workers:
            worker.offer(alert)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for worker in self._workers:
                worker.start()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queue to empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.queue.unfinished_tasks == 0 for w in self._workers):
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the threads; what is still queued is given up (a dead sink must not hold
        shutdown)."""
        for worker in self._workers:
            worker._stop.set()
        for worker in self._workers:
            worker.stop(timeout)
