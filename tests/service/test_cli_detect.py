"""``apos detect``: a timestamp,value CSV scored by the streaming series detector."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apos.cli.main import app
from apos.core.detect.pattern import SeriesDetector

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def series_csv(n: int = 300, spike_at: int = 250) -> str:
    lines = ["timestamp,value,host"]
    for i in range(n):
        value = 100 + 10 * math.sin(i / 20) + (i * 7919 % 13) / 4
        if i == spike_at:
            value += 80
        stamp = (
            f"2026-01-05T{i // 60 % 24:02d}:{i % 60:02d}:00Z"
            if i % 2
            else str(1_767_571_200 + 60 * i)
        )
        lines.append(f"{stamp},{value:.3f},web-{i % 3}")
    return "\n".join(lines) + "\n"


def test_round_trip_keeps_columns_and_adds_scores_from_earlier_rows(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", series_csv())
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["detect", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    with source.open() as a, out.open() as b:
        original, scored = list(csv.reader(a)), list(csv.reader(b))
    assert scored[0] == [*original[0], "anomaly_score"]
    assert [row[:-1] for row in scored[1:]] == original[1:]
    scores = [float(row[-1]) for row in scored[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    # The same numbers as the streaming detector fed the rows one by one.
    detector = SeriesDetector()
    expected = [
        detector.score_one(1_767_571_200 + 60.0 * i, float(row[1]))
        for i, row in enumerate(original[1:])
    ]
    assert scores == pytest.approx(expected, rel=1e-11, abs=1e-12)
    assert scores[250] > 0.9999 and max(scores[:250]) < 0.9999


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "empty"),
        ("time,value\n1,2\n", 1, "missing column(s) timestamp"),
        ("timestamp,val\n1,2\n", 1, "missing column(s) value"),
        ("timestamp,value\n1,2\n2,3\nyesterday,4\n", 4, "timestamp 'yesterday'"),
        ("timestamp,value\n2026-01-05T10:00:00,4\n", 2, "RFC 3339 with a timezone"),
        ("timestamp,value\n1,2\n2,abc\n", 3, "value 'abc' is not a number"),
        ("timestamp,value\n1,2\n2,nan\n", 3, "not a finite number"),
        ("timestamp,value\n1,2\n2,3,4\n", 3, "expected 2 fields, found 3"),
        ("timestamp,value\n5,2\n\n4,3\n", 4, "earlier than line 2"),
        ("timestamp,value,anomaly_score\n1,2,0\n", 1, "already has an anomaly_score"),
    ],
)
def test_bad_input_names_its_line_and_writes_nothing(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    source = write(tmp_path / "in.csv", text)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["detect", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 2
    assert f"line {line}:" in result.output and message in result.output, result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [source]  # no temporary file left behind


def test_bad_input_leaves_an_existing_output_untouched(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "timestamp,value\n1,2\n0,3\n")
    out = write(tmp_path / "out.csv", "previous results\n")
    result = runner.invoke(app, ["detect", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 2
    assert out.read_text() == "previous results\n"


def test_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["detect", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
