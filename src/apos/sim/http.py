"""Run a scenario against a running APOS over HTTP, in real or accelerated time.

:class:`HttpRouter` is a thin adapter with the simulator's router surface: ``route`` posts
the payment to ``POST /v1/route`` and returns the decision; ``observe`` queues the outcome
event, and the queue is posted to ``POST /v1/events`` in batches (at every tick, i.e. every
simulated second, or when ``batch_size`` events are waiting). Every call carries
``Authorization: Bearer <key>``.

With ``speed`` set, ``route`` waits until wall-clock time has caught up with simulated time
(``speed`` = 1: real time; 60: one simulated minute per second). :func:`run_http` also moves
the scenario's start to "now", so the service sees event times close to its own clock; at
``speed`` > 1 simulated time runs ahead of the service's clock.

The baselines run in-process beside it on the same payments, so the report compares them
exactly as in simulated time. :func:`service_anomalies` reads back the anomalies the service
recorded (``GET /v1/anomalies``), each beside the scenario's injected incident it belongs to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import httpx

from apos.core.detect.findings import AnomalyType, Entity
from apos.core.events import PaymentEvent
from apos.core.payment import Payment
from apos.sim.incidents import Flagged, Labelled, flagged_row, ground_truth
from apos.sim.runner import RouterSpec, RunResult, run_scenario
from apos.sim.scenario import Scenario

__all__ = [
    "HttpDecision",
    "HttpRouter",
    "Pacer",
    "flagged_from_record",
    "run_http",
    "service_anomalies",
]


class HttpDecision(NamedTuple):
    """The fields of the service's decision JSON the simulator reads."""

    connector: str
    decision_id: str | None
    explored: bool


class Pacer:
    """Sleeps so that simulated time advances at ``speed`` × wall-clock time."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._anchor: tuple[float, float] | None = None  # (sim time, wall time)

    def wait(self, now: float) -> None:
        """Block until wall-clock time corresponds to simulated time ``now``."""
        if self._anchor is None:
            self._anchor = (now, time.monotonic())
            return
        sim0, wall0 = self._anchor
        delay = wall0 + (now - sim0) / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class HttpRouter:
    """Routes through a running APOS service and reports outcomes to it.

    Args:
        base_url: The service, e.g. ``http://127.0.0.1:8000``.
        api_key: An operator key (``Authorization: Bearer <key>``).
        client: An ``httpx.Client`` to use instead (tests pass the ASGI test client).
        speed: Pace routing at this multiple of real time (``None``: as fast as it answers).
        batch_size: Post queued outcome events once this many are waiting.
        connectors: Sent as ``eligible_connectors`` when a payment has none of its own (the
            service may know connectors the scenario does not have).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str = "",
        *,
        client: httpx.Client | None = None,
        speed: float | None = None,
        batch_size: int = 200,
        timeout: float = 10.0,
        connectors: Sequence[str] | None = None,
    ) -> None:
        self._own = client is None
        self.client = (
            client if client is not None else httpx.Client(base_url=base_url, timeout=timeout)
        )
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.pacer = Pacer(speed) if speed else None
        self.batch_size = batch_size
        self.connectors = list(connectors) if connectors else None
        self._queue: list[dict[str, Any]] = []
        self.events_posted = 0

    def route(self, payment: Payment, now: float) -> HttpDecision:
        """``POST /v1/route`` with the payment's fields."""
        if self.pacer is not None:
            self.pacer.wait(now)
        body: dict[str, Any] = {
            "payment_id": payment.payment_id,
            "merchant_id": payment.merchant_id,
            "amount": payment.amount,
            "currency": payment.currency,
            "payment_method": payment.payment_method,
            "card_network": payment.card_network,
            "country": payment.country,
            "payment_method_type": payment.payment_method_type,
        }
        eligible = payment.eligible_connectors or self.connectors
        if eligible:
            body["eligible_connectors"] = list(eligible)
        response = self.client.post("/v1/route", json=body, headers=self.headers)
        _raise_for(response, "/v1/route")
        d = response.json()
        return HttpDecision(d["connector"], d.get("decision_id"), bool(d.get("explored")))

    def observe(self, event: PaymentEvent, now: float) -> None:
        """Queue the outcome event; post the queue when it is full."""
        self._queue.append(event.model_dump(mode="json", exclude_none=True))
        if len(self._queue) >= self.batch_size:
            self.flush()

    def tick(self, now: float) -> None:
        """Post whatever outcome events are queued."""
        self.flush()

    def flush(self) -> None:
        """``POST /v1/events`` with the queued events (one batch)."""
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        response = self.client.post("/v1/events", json=batch, headers=self.headers)
        _raise_for(response, "/v1/events")
        self.events_posted += len(batch)

    def close(self) -> None:
        """Post what is queued and close the client if this router opened it."""
        self.flush()
        if self._own:
            self.client.close()


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:500]}")


def run_http(
    scenario: Scenario,
    base_url: str = "http://127.0.0.1:8000",
    api_key: str = "",
    *,
    speed: float | None = 1.0,
    payments: int | None = None,
    seed: int | None = None,
    baselines: Sequence[str] = (
        "random",
        "round_robin",
        "fixed_best",
        "sliding_window_sr",
        "oracle",
    ),
    start_now: bool = True,
    client: httpx.Client | None = None,
    tick_interval: float = 1.0,
    anomalies: bool = False,
) -> RunResult:
    """Drive a running APOS with ``scenario`` and measure it beside in-process baselines.

    Args:
        speed: Multiple of real time (1: real time); ``None`` routes as fast as it answers.
        payments: Scale the run (a real-time day at full volume takes a day).
        start_now: Move the scenario's start to the current time.
        anomalies: Afterwards, put the anomalies the service recorded since the scenario's
            start in ``RunResult.anomalies`` (:func:`service_anomalies`).
    """
    if start_now:
        scenario = dataclasses.replace(
            scenario, traffic=dataclasses.replace(scenario.traffic, start=float(int(time.time())))
        )
    router = HttpRouter(
        base_url, api_key, client=client, speed=speed, connectors=scenario.connector_names
    )
    routers: Mapping[str, RouterSpec] = {"apos": router, **{b: b for b in baselines}}
    try:
        result = run_scenario(
            scenario,
            routers,
            seed=seed,
            payments=payments,
            tick_interval=tick_interval,
            run_id=f"h{time.time_ns():x}",
        )
        router.flush()
        if anomalies:
            result.anomalies = service_anomalies(router.client, router.headers, scenario)
        return result
    finally:
        router.close()


def _epoch(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def flagged_from_record(record: Mapping[str, Any], labelled: Sequence[Labelled]) -> Flagged:
    """An anomaly record as ``GET /v1/anomalies`` shows it, as a report row matched to the
    injected incidents ``labelled`` (flagged: ``detected_at``; cleared: ``ended_at``)."""
    entity = Entity(record.get("merchant_id"), record.get("connector"), record.get("segment"))
    ended = record.get("ended_at")
    return flagged_row(
        AnomalyType(record["anomaly_type"]),
        entity,
        str(record["severity"]),
        float(record.get("peak_score") or record.get("score") or 0.0),
        _epoch(record["detected_at"]),
        None if ended is None else _epoch(ended),
        labelled,
    )


def service_anomalies(
    client: httpx.Client,
    headers: Mapping[str, str],
    scenario: Scenario,
    *,
    max_pages: int = 10,
) -> list[Flagged] | None:
    """The anomalies a running APOS recorded with ``detected_at`` at or after the start of
    ``scenario``, oldest first, matched to its injected incidents (:func:`ground_truth`).

    ``None`` when the service has no anomaly records (detection off: 503). Reads at most
    ``max_pages`` pages of 1,000.

    Raises:
        RuntimeError: on any other error answer.
    """
    since = datetime.fromtimestamp(scenario.traffic.start, UTC).isoformat()
    params: dict[str, Any] = {"since": since, "limit": 1000}
    items: list[dict[str, Any]] = []
    for _ in range(max_pages):
        response = client.get("/v1/anomalies", params=params, headers=dict(headers))
        if response.status_code == 503:
            return None
        _raise_for(response, "/v1/anomalies")
        page = response.json()
        items += page["items"]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    labelled = ground_truth(scenario)
    return sorted((flagged_from_record(item, labelled) for item in items), key=lambda a: a.flagged)
