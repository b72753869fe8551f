"""The README's in-process example runs and learns what it claims to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "in_process.py"


def test_in_process_example_routes_to_the_connector_it_taught() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0].split()[1] == "True"  # cold start falls back to the rules
    assert out[1].startswith("adyen ")
    assert out[-1].endswith(": adyen")  # the snapshot restores what was learnt


def test_the_readme_shows_the_example_as_it_is() -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    body = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert body in readme
