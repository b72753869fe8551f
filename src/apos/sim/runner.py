"""Run a scenario in simulated time against APOS and the baselines.

Every router sees the same :class:`~apos.sim.stream.Stream`. For each payment, in time
order, a router first observes the outcomes that have reached it by then (each outcome
arrives ``latency + feedback lag`` after the payment was routed, through a heap), is ticked
if a ``tick_interval`` of simulated time has passed, then routes the payment. The outcome of
its choice is read from the stream (common random numbers), so routers differ only in their
choices.

:func:`run_scenario` runs to the end and returns a :class:`RunResult`; :func:`run_live`
yields :class:`Progress` as simulated time passes, for a live demo.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from apos.core.detect.config import DetectionConfig
from apos.core.events import PaymentEvent, PaymentStatus
from apos.sim.baselines import BASELINES, Oracle
from apos.sim.incidents import Flagged, MonitoredRouter, ground_truth
from apos.sim.metrics import OutageImpact, TimeSeries, outage_impact, time_series
from apos.sim.routers import BatchRouter, FastObserver, Note, RouterFactory, RunContext
from apos.sim.scenario import DECLINE_CODES, Scenario
from apos.sim.stream import CODES, Stream, build_stream
from apos.sim.truth import Incident

__all__ = [
    "DEFAULT_ROUTERS",
    "LiveRun",
    "Progress",
    "RouterProgress",
    "RouterResult",
    "RouterSpec",
    "RunResult",
    "outcome_event",
    "run_live",
    "run_scenario",
    "run_stream",
]

DEFAULT_ROUTERS: tuple[str, ...] = (
    "apos",
    "random",
    "round_robin",
    "fixed_best",
    "sliding_window_sr",
    "oracle",
)
SLICE = 8192  # payments per router per step; bounds memory of the per-slice Python lists

RouterSpec = str | RouterFactory | Any  # a registry name, a factory(ctx), or a router

_MESSAGES = [DECLINE_CODES[c][1] if c in DECLINE_CODES else "Connector not eligible" for c in CODES]
_NOT_ELIGIBLE = CODES.index("connector_not_eligible")


def _engine_factory(ctx: RunContext) -> Any:
    from apos.sim.engine_router import EngineRouter

    return EngineRouter.build(ctx)


ROUTERS: dict[str, RouterFactory] = {"apos": _engine_factory, **BASELINES}


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class RouterResult:
    """One router's run. ``regret`` is the oracle's successes minus this router's."""

    name: str
    chosen: npt.NDArray[np.int16]  # connector index per payment (-1: unknown connector)
    success: npt.NDArray[np.bool_]
    payments: int
    successes: int
    success_rate: float
    expected_success_rate: float  # mean true p of the chosen connectors
    regret: int
    regret_pp: float  # oracle success rate minus this one, in percentage points
    invalid: int  # routed to a connector that was unknown or not eligible
    explored_share: float
    seconds: float  # wall time spent in this router's loop
    notes: list[Note]
    outages: list[OutageImpact]
    batch: bool = False  # routed whole slices at once (the oracle): no per-payment speed

    @property
    def payments_per_second(self) -> float:
        """Simulated payments per wall-clock second for this router (routing + feedback)."""
        return self.payments / self.seconds if self.seconds > 0 else float("inf")

    @property
    def anomalies(self) -> list[Note]:
        """Anomalies the router raised."""
        return [n for n in self.notes if n.kind == "anomaly"]

    @property
    def actions(self) -> list[Note]:
        """Actions the router took (breakers opened, healing, ...)."""
        return [n for n in self.notes if n.kind == "action"]


@dataclass(slots=True)
class RunResult:
    """Everything a run measured; render it with ``apos.sim.report``."""

    scenario: Scenario
    seed: int
    payments: int
    connectors: tuple[str, ...]
    routers: dict[str, RouterResult]
    oracle_success_rate: float
    incidents: list[Incident]
    series: TimeSeries
    stream_seconds: float
    stream: Stream | None = None  # kept only with keep_stream=True (memory)
    # Incidents a Monitor raised on the APOS lane's outcomes (None: detection not run)
    anomalies: list[Flagged] | None = None
    detection_seconds: float = 0.0  # wall time spent in that Monitor

    def best_baseline(self, exclude: Sequence[str] = ("apos", "oracle")) -> RouterResult:
        """The non-oracle baseline with the highest success rate."""
        return max(
            (r for n, r in self.routers.items() if n not in exclude), key=lambda r: r.success_rate
        )


@dataclass(frozen=True, slots=True)
class RouterProgress:
    """One router's figures at a progress point."""

    payments: int
    success_rate: float  # since the start
    recent_success_rate: float  # since the previous progress point (NaN if no payments)
    share: dict[str, float]  # routing share per connector since the previous point


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a live run."""

    time: float  # epoch seconds of simulated time
    elapsed: float  # simulated seconds since the scenario's start
    payments_done: int
    payments_total: int
    routers: dict[str, RouterProgress]
    incidents: list[str]  # ground-truth incidents in progress
    notes: dict[str, list[Note]]  # anomalies/actions reported since the previous point


# --------------------------------------------------------------------------- lanes


@dataclass(slots=True)
class _Lane:
    """One router's state while it runs through the stream."""

    name: str
    router: Any
    chosen: npt.NDArray[np.int16]
    explored: npt.NDArray[np.bool_]
    batch: bool
    fast: bool
    heap: list[tuple[Any, ...]] = field(default_factory=list)
    next_tick: float = float("-inf")
    seconds: float = 0.0
    notes: list[Note] = field(default_factory=list)


def outcome_event(
    stream: Stream,
    i: int,
    payment: Any,
    connector: str,
    success: bool,
    code: int,
    latency_ms: float,
    completed_at: float,
    decision_id: str | None,
) -> PaymentEvent:
    """The outcome event of payment ``i`` at ``connector`` (trusted: built without validation)."""
    return PaymentEvent.model_construct(
        event_id=f"evt_{stream.run_id}_{i}",
        payment_id=payment.payment_id,
        attempt=1,
        merchant_id=payment.merchant_id,
        profile_id=None,
        connector=connector,
        status=PaymentStatus.SUCCEEDED if success else PaymentStatus.FAILED,
        amount=payment.amount,
        currency=payment.currency,
        payment_method=payment.payment_method,
        payment_method_type=payment.payment_method_type,
        card_network=payment.card_network,
        issuer_country=payment.country,
        latency_ms=latency_ms,
        error_code=None if success else CODES[code],
        error_message=None if success else _MESSAGES[code],
        fingerprint=stream.fingerprint(i),
        decision_id=decision_id,
        occurred_at=datetime.fromtimestamp(completed_at, UTC),
    )


def _run_slice(
    lane: _Lane,
    stream: Stream,
    start: int,
    stop: int,
    payments: list[Any],
    tick_interval: float,
) -> None:
    """Route payments ``start``..``stop`` with one router (the hot loop)."""
    began = time.perf_counter()
    if lane.batch:
        lane.chosen[start:stop] = lane.router.choose_batch(stream, start, stop)
        lane.seconds += time.perf_counter() - began
        return
    names = stream.connectors
    index = {c: i for i, c in enumerate(names)}
    times = stream.times[start:stop].tolist()
    success = stream.success[start:stop].tolist()
    eligible = stream.eligible[start:stop].tolist()
    code = stream.code[start:stop].tolist()
    latency = stream.latency_ms[start:stop].tolist()
    lag = stream.lag[start:stop].tolist()
    chosen = [-1] * (stop - start)
    explored = [False] * (stop - start)
    router = lane.router
    route = router.route
    tick = router.tick
    heap = lane.heap
    push, pop = heapq.heappush, heapq.heappop
    fast = lane.fast
    observe = router.observe_outcome if fast else router.observe
    next_tick = lane.next_tick
    for k in range(stop - start):
        t = times[k]
        while heap and heap[0][0] <= t:
            entry = pop(heap)
            if fast:
                observe(entry[2], entry[3], entry[0])
            else:
                observe(outcome_event(stream, *entry[1:]), entry[0])
        if t >= next_tick:
            tick(t)
            next_tick = t + tick_interval
        decision = route(payments[k], t)
        ci = index.get(decision.connector, -1)
        chosen[k] = ci
        explored[k] = getattr(decision, "explored", False)
        if ci < 0:
            continue
        if eligible[k][ci]:
            ok, c, lat = success[k][ci], code[k][ci], latency[k][ci]
        else:
            ok, c, lat = False, _NOT_ELIGIBLE, 0.0
        done = t + lat / 1000.0
        i = start + k
        if fast:
            push(heap, (done + lag[k], i, names[ci], ok))
        else:
            push(
                heap,
                (done + lag[k], i, payments[k], names[ci], ok, c, lat, done, decision.decision_id),
            )
    lane.next_tick = next_tick
    lane.chosen[start:stop] = chosen
    lane.explored[start:stop] = explored
    drain = getattr(router, "drain_notes", None)
    if drain is not None:
        lane.notes.extend(drain())
    lane.seconds += time.perf_counter() - began


def _flush(lane: _Lane, stream: Stream, now: float) -> None:
    """Deliver every outcome still in flight and tick once at the end."""
    if lane.batch:
        return
    began = time.perf_counter()
    while lane.heap:
        entry = heapq.heappop(lane.heap)
        if lane.fast:
            lane.router.observe_outcome(entry[2], entry[3], entry[0])
        else:
            lane.router.observe(outcome_event(stream, *entry[1:]), entry[0])
    lane.router.tick(now)
    drain = getattr(lane.router, "drain_notes", None)
    if drain is not None:
        lane.notes.extend(drain())
    lane.seconds += time.perf_counter() - began


# --------------------------------------------------------------------------- running


def _priority(stream: Stream) -> tuple[str, ...]:
    """Connectors by traffic-weighted mean true success rate where eligible (fixed_best)."""
    elig = stream.eligible
    counts = elig.sum(axis=0)
    means = np.where(counts > 0, (stream.p * elig).sum(axis=0) / np.maximum(counts, 1), -1.0)
    order = sorted(range(len(stream.connectors)), key=lambda c: (-means[c], c))
    return tuple(stream.connectors[c] for c in order)


def _resolve(spec: RouterSpec, ctx: RunContext) -> Any:
    if isinstance(spec, str):
        if spec not in ROUTERS:
            raise ValueError(f"unknown router {spec!r} (known: {', '.join(ROUTERS)})")
        return ROUTERS[spec](ctx)
    if hasattr(spec, "route") or isinstance(spec, BatchRouter):
        return spec
    if callable(spec):
        return spec(ctx)
    raise TypeError(f"not a router, router name or factory: {spec!r}")


def _lanes(
    stream: Stream,
    routers: Sequence[str] | Mapping[str, RouterSpec],
    seed: int,
    options: Mapping[str, Any],
    detect: bool | DetectionConfig = False,
) -> list[_Lane]:
    specs: Mapping[str, RouterSpec] = (
        routers if isinstance(routers, Mapping) else {r: r for r in routers}
    )
    ctx = RunContext(stream, seed, stream.connectors, _priority(stream), dict(options))
    n = len(stream)
    lanes = []
    for name, spec in specs.items():
        router = _resolve(spec, ctx)
        if detect is not False and name == "apos" and not isinstance(router, BatchRouter):
            config = detect if isinstance(detect, DetectionConfig) else None
            router = MonitoredRouter(router, config)
        lanes.append(
            _Lane(
                name=name,
                router=router,
                chosen=np.full(n, -1, dtype=np.int16),
                explored=np.zeros(n, dtype=bool),
                batch=isinstance(router, BatchRouter),
                fast=isinstance(router, FastObserver),
            )
        )
    return lanes


def _summarise(
    stream: Stream, lanes: list[_Lane], stream_seconds: float, keep_stream: bool
) -> RunResult:
    n = len(stream)
    rows = np.arange(n)
    oracle_choice = Oracle(stream.connectors).choose_batch(stream, 0, n)
    oracle_success = stream.success[rows, oracle_choice]
    oracle_rate = float(oracle_success.mean()) if n else 0.0
    incidents = stream.truth.incidents()
    down = [i for i in incidents if i.down_windows]
    start = stream.scenario.traffic.start
    results: dict[str, RouterResult] = {}
    watched = [lane.router for lane in lanes if isinstance(lane.router, MonitoredRouter)]
    for lane in lanes:
        ch = lane.chosen.astype(np.int64)
        valid = ch >= 0
        col = np.where(valid, ch, 0)
        ok_elig = stream.eligible[rows, col] & valid
        success = stream.success[rows, col] & ok_elig
        expected = np.where(ok_elig, stream.p[rows, col], 0.0)
        wins = int(success.sum())
        impacts = []
        for inc in down:
            ci = stream.truth.index[inc.target]
            matching = stream.eligible[:, ci] & stream.truth.where_mask(inc.where, stream.segments)
            impacts.append(outage_impact(inc, ci, stream.times, start, lane.chosen, matching))
        results[lane.name] = RouterResult(
            name=lane.name,
            chosen=lane.chosen,
            success=success,
            payments=n,
            successes=wins,
            success_rate=wins / n if n else 0.0,
            expected_success_rate=float(expected.mean()) if n else 0.0,
            regret=int(oracle_success.sum()) - wins,
            regret_pp=(oracle_rate - (wins / n if n else 0.0)) * 100.0,
            invalid=int((~ok_elig).sum()),
            explored_share=float(lane.explored.mean()) if n else 0.0,
            seconds=lane.seconds,
            notes=lane.notes,
            outages=impacts,
            batch=lane.batch,
        )
    series = time_series(
        stream.times,
        start,
        stream.scenario.traffic.duration,
        stream.p,
        stream.eligible,
        {n_: r.chosen for n_, r in results.items()},
        {n_: r.success for n_, r in results.items()},
    )
    return RunResult(
        scenario=stream.scenario,
        seed=stream.seed,
        payments=n,
        connectors=stream.connectors,
        routers=results,
        oracle_success_rate=oracle_rate,
        incidents=incidents,
        series=series,
        stream_seconds=stream_seconds,
        stream=stream if keep_stream else None,
        anomalies=watched[0].rows(ground_truth(stream.scenario)) if watched else None,
        detection_seconds=watched[0].seconds if watched else 0.0,
    )


def _progress(
    stream: Stream, lanes: list[_Lane], prev: int, upto: int, tally: dict[str, list[int]]
) -> Progress:
    """Snapshot after payments ``prev``..``upto``; ``tally`` carries [wins, notes seen]."""
    t = float(stream.times[upto - 1]) if upto else stream.scenario.traffic.start
    elapsed = t - stream.scenario.traffic.start
    rows = np.arange(prev, upto)
    routers = {}
    notes = {}
    for lane in lanes:
        ch = lane.chosen[prev:upto].astype(np.int64)
        col = np.where(ch >= 0, ch, 0)
        ok = stream.success[rows, col] & stream.eligible[rows, col] & (ch >= 0)
        seen = tally.setdefault(lane.name, [0, 0])
        seen[0] += int(ok.sum())
        share = {
            c: float((ch == i).mean()) if len(ch) else 0.0 for i, c in enumerate(stream.connectors)
        }
        routers[lane.name] = RouterProgress(
            payments=upto,
            success_rate=seen[0] / upto if upto else float("nan"),
            recent_success_rate=float(ok.mean()) if len(ok) else float("nan"),
            share=share,
        )
        notes[lane.name] = lane.notes[seen[1] :]
        seen[1] = len(lane.notes)
    incidents = [i.label for i in stream.truth.active_incidents(elapsed)]
    return Progress(t, elapsed, upto, len(stream), routers, incidents, notes)


def _execute(
    stream: Stream,
    routers: Sequence[str] | Mapping[str, RouterSpec],
    *,
    seed: int,
    tick_interval: float,
    progress_every: float | None,
    speed: float | None,
    stream_seconds: float,
    keep_stream: bool,
    options: Mapping[str, Any],
    detect: bool | DetectionConfig = False,
) -> Generator[Progress, None, RunResult]:
    lanes = _lanes(stream, routers, seed, options, detect)
    n = len(stream)
    start = stream.scenario.traffic.start
    if progress_every is not None:
        marks = start + progress_every * np.arange(
            1, int(stream.scenario.traffic.duration // progress_every) + 1
        )
        bounds = sorted({*np.searchsorted(stream.times, marks).tolist(), n})
    else:
        bounds = [n]
    wall0 = time.monotonic()
    prev, done = 0, 0
    tally: dict[str, list[int]] = {}
    for bound in bounds:
        while done < bound:
            stop = min(done + SLICE, bound)
            payments = stream.payments(done, stop)
            for lane in lanes:
                _run_slice(lane, stream, done, stop, payments, tick_interval)
            done = stop
        if progress_every is None:
            continue
        if speed:
            elapsed = (float(stream.times[bound - 1]) - start) if bound else 0.0
            wait = wall0 + elapsed / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield _progress(stream, lanes, prev, bound, tally)
        prev = bound
    for lane in lanes:
        _flush(lane, stream, stream.scenario.end)
    return _summarise(stream, lanes, stream_seconds, keep_stream)


def _drain(gen: Generator[Progress, None, RunResult]) -> RunResult:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result: RunResult = stop.value
            return result


def run_stream(
    stream: Stream,
    routers: Sequence[str] | Mapping[str, RouterSpec] = DEFAULT_ROUTERS,
    *,
    tick_interval: float = 1.0,
    keep_stream: bool = False,
    options: Mapping[str, Any] | None = None,
    stream_seconds: float = 0.0,
    detect: bool | DetectionConfig = False,
) -> RunResult:
    """Run ``routers`` over an already built stream (see :func:`run_scenario`)."""
    return _drain(
        _execute(
            stream,
            routers,
            seed=stream.seed,
            tick_interval=tick_interval,
            progress_every=None,
            speed=None,
            stream_seconds=stream_seconds,
            keep_stream=keep_stream,
            options=options or {},
            detect=detect,
        )
    )


def run_scenario(
    scenario: Scenario,
    routers: Sequence[str] | Mapping[str, RouterSpec] = DEFAULT_ROUTERS,
    *,
    seed: int | None = None,
    payments: int | None = None,
    tick_interval: float = 1.0,
    run_id: str | None = None,
    keep_stream: bool = False,
    options: Mapping[str, Any] | None = None,
    detect: bool | DetectionConfig = False,
) -> RunResult:
    """Simulate ``scenario`` once and measure every router on the same payments.

    Args:
        routers: Registry names (``apos``, ``random``, ``round_robin``, ``fixed_best``,
            ``sliding_window_sr``, ``oracle``), or a mapping of display name to a name, a
            factory ``f(RunContext) -> router`` or a router object.
        seed: Defaults to the scenario's seed. Same scenario, seed and payments: same result.
        payments: Scale the run to this many regular payments (same duration and shape).
        tick_interval: Simulated seconds between ``tick()`` calls (at most one per payment).
        run_id: Goes into payment and event ids (default ``s<seed>``).
        keep_stream: Keep the payment stream in the result (~100 MB per million payments).
        options: Passed to router factories in ``RunContext.options``.
        detect: Also feed the ``apos`` lane's outcome events to an anomaly
            :class:`~apos.core.detect.monitor.Monitor` (``True``: default thresholds, or
            a ``DetectionConfig``); ``RunResult.anomalies`` then lists what it raised
            beside the scenario's injected incidents. Off by default: it costs time.
    """
    began = time.perf_counter()
    stream = build_stream(scenario, seed=seed, payments=payments, run_id=run_id)
    return run_stream(
        stream,
        routers,
        tick_interval=tick_interval,
        keep_stream=keep_stream,
        options=options,
        stream_seconds=time.perf_counter() - began,
        detect=detect,
    )


class LiveRun(Iterator[Progress]):
    """Iterate for :class:`Progress`; afterwards ``result`` holds the :class:`RunResult`."""

    def __init__(self, gen: Generator[Progress, None, RunResult]) -> None:
        self._gen = gen
        self.result: RunResult | None = None

    def __iter__(self) -> LiveRun:
        return self

    def __next__(self) -> Progress:
        try:
            return next(self._gen)
        except StopIteration as stop:
            self.result = stop.value
            raise


def run_live(
    scenario: Scenario,
    routers: Sequence[str] | Mapping[str, RouterSpec] = ("apos",),
    *,
    seed: int | None = None,
    payments: int | None = None,
    progress_every: float = 60.0,
    speed: float | None = None,
    tick_interval: float = 1.0,
    on_progress: Callable[[Progress], None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> LiveRun:
    """Run ``scenario`` step by step, yielding :class:`Progress` every ``progress_every``.

    Every router has handled exactly the payments up to ``Progress.time`` when a snapshot
    is yielded, so a dashboard reading the engine in between sees a consistent state.

    Args:
        speed: Pace simulated time at ``speed`` × wall-clock time (``None``: flat out).
        on_progress: Also called with each snapshot (for callback-style callers).

    >>> # for p in run_live(load_scenario("sudden_outage"), speed=600): show(p)
    """
    stream = build_stream(scenario, seed=seed, payments=payments)
    gen = _execute(
        stream,
        routers,
        seed=stream.seed,
        tick_interval=tick_interval,
        progress_every=progress_every,
        speed=speed,
        stream_seconds=0.0,
        keep_stream=False,
        options=options or {},
    )
    if on_progress is None:
        return LiveRun(gen)

    def with_callback() -> Generator[Progress, None, RunResult]:
        result = yield from _tap(gen, on_progress)
        return result

    return LiveRun(with_callback())


def _tap(
    gen: Generator[Progress, None, RunResult], fn: Callable[[Progress], None]
) -> Generator[Progress, None, RunResult]:
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            result: RunResult = stop.value
            return result
        fn(item)
        yield item
