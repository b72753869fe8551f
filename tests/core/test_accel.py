"""The compiled hot path (``make accel``) computes exactly what its Python source does.

The learner and the draws table are compiled with mypyc from the same source that runs as
plain Python; these tests feed both the same outcomes and compare every number bit for bit.
Without a compiled build both sides are the source and the tests still run (and pass).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

from apos.accel import ACCELERATED, compiled, is_stale
from apos.core.config import LearnerConfig
from apos.core.payment import context_path_of
from apos.core.routing import draws, learner

from .helpers import pure_module

CONNECTORS = ["stripe", "adyen", "checkout", "braintree", "worldpay"]


def _paths(rng: random.Random) -> list[tuple[tuple[str, ...], ...]]:
    return [
        context_path_of(
            rng.choice(["m1", "m2", "m3"]),
            rng.choice(["card", "wallet"]),
            rng.choice(["visa", "mastercard", None]),
            rng.choice(["US", "GB", "DE", None]),
            rng.choice([99, 1_999, 45_000, None]),
            "USD",
        )
        for _ in range(40)
    ]


def test_compiled_learner_matches_its_source_bit_for_bit() -> None:
    pure = pure_module("apos.core.routing.learner")
    config = LearnerConfig(half_life_s=600.0, change_threshold=6.0)
    fast, slow = learner.ContextLearner(config), pure.ContextLearner(config)
    rng = random.Random(3)
    paths = _paths(rng)
    ts = 1_700_000_000.0
    for step in range(4_000):
        ts += rng.expovariate(2.0)
        connector = rng.choice(CONNECTORS)
        path = rng.choice(paths)
        # A drop at step 2,000 for one connector exercises the change detectors too.
        p = 0.3 if connector == "adyen" and step > 2_000 else 0.85
        success = rng.random() < p
        latency = rng.choice([None, rng.uniform(50, 900)])
        fast.observe(connector, path, success, latency, ts)
        slow.observe(connector, path, success, latency, ts)
        if step % 7 == 0:
            probe = rng.choice(paths)
            assert fast.estimate(CONNECTORS, probe, ts, True) == slow.estimate(
                CONNECTORS, probe, ts, True
            )
    assert [(c.connector, c.context, c.at) for c in fast.drain_changes()] == [
        (c.connector, c.context, c.at) for c in slow.drain_changes()
    ]
    assert fast.maintain(ts + 86_400) == slow.maintain(ts + 86_400)
    assert fast.to_dict() == slow.to_dict()


def test_compiled_draws_match_their_source() -> None:
    pure = pure_module("apos.core.routing.draws")
    fast, slow = draws.PosteriorDraws(256, seed=11), pure.PosteriorDraws(256, seed=11)
    rng = random.Random(5)
    for _ in range(200):
        k = rng.randint(2, 9)
        a = [rng.uniform(0.5, 500) for _ in range(k)]
        b = [rng.uniform(0.5, 500) for _ in range(k)]
        penalties = rng.choice([None, [rng.uniform(0, 0.05) for _ in range(k)]])
        (fw, fs), (sw, ss) = fast.win_table(a, b, penalties), slow.win_table(a, b, penalties)
        assert fs == ss
        assert fw.tolist() == sw.tolist()


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    source = tmp_path / "learner.py"
    extension = tmp_path / "learner.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    extension.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(extension, (2_000, 2_000))
    assert not is_stale(extension)
    os.utime(source, (3_000, 3_000))  # the source was edited after the build
    assert is_stale(extension)
    assert set(compiled()) <= set(ACCELERATED)


def test_the_makefile_compiles_exactly_the_accelerated_modules() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = re.search(r"^ACCEL_SRC\s*:=((?:.*\\\n)*.*)$", makefile, re.M)
    assert listed is not None
    paths = listed.group(1).replace("\\", " ").split()
    assert [p.removeprefix("src/").removesuffix(".py").replace("/", ".") for p in paths] == list(
        ACCELERATED
    )


_RUN = """
import hashlib, sys
import apos.core.engine
from apos.sim.runner import run_scenario
from apos.sim.scenario import load_scenario
r = run_scenario(load_scenario("sudden_outage"), ["apos"], payments=6_000, seed=4).routers["apos"]
print(apos.core.engine.__file__, hashlib.sha256(r.chosen.tobytes()).hexdigest(), r.successes)
"""


def test_a_whole_run_routes_the_same_compiled_and_as_plain_python() -> None:
    """APOS_PURE=1 imports every accelerated module from source: the same payments must go
    to the same connectors, decision for decision."""
    runs = []
    for pure in ("1", ""):
        env = {**os.environ, "APOS_PURE": pure}
        out = subprocess.run(
            [sys.executable, "-c", _RUN], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append(out)
    (pure_file, *pure_result), (file, *result) = runs
    assert pure_file.endswith("engine.py")
    assert file.endswith(".so") == ("apos.core.engine" in compiled())
    assert pure_result == result
