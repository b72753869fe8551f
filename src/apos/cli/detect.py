"""``apos detect``: score a ``timestamp,value`` series offline with the streaming detector.

Each row's ``anomaly_score`` (in [0, 1]) comes from :class:`apos.core.detect.pattern.
SeriesDetector` fed the rows in order, so it depends on earlier rows only: the same
numbers the detector would have given live, and a fair input for labelled benchmarks.
The whole input is checked before anything is written, and the output appears by an
atomic rename: bad input leaves no partial file behind.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["InputError", "detect", "read_series", "score_series"]

SCORE_COLUMN = "anomaly_score"
console = Console(stderr=True)


class InputError(ValueError):
    """Bad input, with the line it is on (1 = the header)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_timestamp(text: str) -> float:
    """Epoch seconds from epoch seconds or RFC 3339 with a zone (``Z`` or an offset)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("no timezone")
    return parsed.timestamp()


def read_series(
    lines: Sequence[str],
) -> tuple[list[str], list[list[str]], list[tuple[float, float]]]:
    """Header, rows and ``(timestamp, value)`` points of a CSV file's lines, checked."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(
            1, "the file is empty; a header with timestamp,value is required"
        ) from None
    names = [name.strip() for name in header]
    missing = [name for name in ("timestamp", "value") if name not in names]
    if missing:
        raise InputError(1, f"missing column(s) {', '.join(missing)} in the header")
    if SCORE_COLUMN in names:
        raise InputError(1, f"the input already has an {SCORE_COLUMN} column")
    ts_at, value_at = names.index("timestamp"), names.index("value")
    rows: list[list[str]] = []
    points: list[tuple[float, float]] = []
    previous: tuple[int, float] | None = None
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise InputError(line, f"expected {len(header)} fields, found {len(row)}")
        try:
            ts = parse_timestamp(row[ts_at])
        except ValueError:
            raise InputError(
                line,
                f"timestamp {row[ts_at].strip()!r} is neither RFC 3339 with a timezone "
                "(2026-01-31T10:00:00Z) nor epoch seconds",
            ) from None
        try:
            value = float(row[value_at])
        except ValueError:
            raise InputError(line, f"value {row[value_at].strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(line, f"value {row[value_at].strip()!r} is not a finite number")
        if previous is not None and ts < previous[1]:
            raise InputError(
                line,
                f"timestamp earlier than line {previous[0]}'s: rows must be sorted by time",
            )
        previous = (line, ts)
        rows.append(row)
        points.append((ts, value))
    return header, rows, points


def score_series(
    points: Sequence[tuple[float, float]], season_s: float, slot_s: float
) -> list[float]:
    """Scores of ``points`` from a fresh :class:`SeriesDetector`, each from earlier points."""
    from apos.core.detect.pattern import SeriesConfig, SeriesDetector

    detector = SeriesDetector(SeriesConfig(season_s=season_s, slot_s=slot_s))
    return [detector.score_one(ts, value) for ts, value in points]


def detect(
    input_file: Annotated[
        Path,
        typer.Option(
            "--input",
            exists=True,
            dir_okay=False,
            readable=True,
            help="CSV with a header holding timestamp (RFC 3339 with zone, or epoch "
            "seconds) and value; other columns are kept.",
        ),
    ],
    output_file: Annotated[
        Path,
        typer.Option("--output", dir_okay=False, help="Where the scored CSV goes."),
    ],
    season_s: Annotated[
        float, typer.Option(min=0.0, help="Season length in seconds (0: none).")
    ] = 86_400.0,
    slot_s: Annotated[float, typer.Option(min=1.0, help="Seasonal slot width, seconds.")] = 1_800.0,
) -> None:
    """Score a timestamp,value series: writes it back with an anomaly_score column in
    [0, 1], each score from earlier rows only (the streaming SeriesDetector)."""
    try:
        with input_file.open(encoding="utf-8-sig", newline="") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as exc:
        console.print(f"[red]{input_file}: not UTF-8 text ({exc.reason})[/red]")
        raise typer.Exit(2) from None
    try:
        header, rows, points = read_series(lines)
        scores = score_series(points, season_s, slot_s)
    except InputError as exc:
        console.print(f"[red]{input_file}:{exc}[/red]".replace(":line ", ": line "))
        raise typer.Exit(2) from None
    except ValueError as exc:  # the detector's own settings
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    directory = output_file.resolve().parent
    fd, temporary = tempfile.mkstemp(prefix=f".{output_file.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([*header, SCORE_COLUMN])
            for row, score in zip(rows, scores, strict=True):
                writer.writerow([*row, format(score, ".12g")])
        os.replace(temporary, output_file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    flagged = sum(score >= 0.9999 for score in scores)
    console.print(f"scored {len(scores)} rows into {output_file} ({flagged} at or above 0.9999)")
