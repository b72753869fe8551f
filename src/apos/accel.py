"""Which hot-path modules run compiled (mypyc), and whether a compiled one is out of date.

``make accel`` compiles the routing core's hot loops (``ACCEL_SRC`` in the Makefile, the
modules in :data:`ACCELERATED`) to C extensions beside their sources; Python then imports
the extension instead of the ``.py``. The source stays the one truth: without the
extensions (``make pure``, a checkout never compiled, or ``APOS_PURE=1`` in the
environment) the same code runs as plain Python with the same results, bit for bit (the
tests hold the two to that). The one hazard is an extension older than its source, which
would run yesterday's code: :func:`stale` finds those, the test suite refuses to run with
any, and the service logs them at start.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from importlib.util import find_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType

__all__ = ["ACCELERATED", "compiled", "force_pure", "is_stale", "stale"]

# The same list as ACCEL_SRC in the Makefile (a test holds the two together).
ACCELERATED: tuple[str, ...] = (
    "apos.core.routing.learner",
    "apos.core.routing.draws",
    "apos.core.breaker",
    "apos.core.stats.decayed_beta",
    "apos.core.engine",
)


def _extension_of(module: str) -> Path | None:
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin if origin.suffix == ".so" or origin.suffix == ".pyd" else None


def compiled() -> list[str]:
    """The accelerated modules that import as compiled extensions."""
    return [name for name in ACCELERATED if _extension_of(name) is not None]


def is_stale(extension: Path) -> bool:
    """Whether the ``.py`` beside a compiled ``extension`` changed after it was built."""
    source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
    return source.exists() and source.stat().st_mtime > extension.stat().st_mtime


def stale() -> list[str]:
    """Compiled modules whose ``.py`` source changed after they were built."""
    return [
        name
        for name in ACCELERATED
        if (extension := _extension_of(name)) is not None and is_stale(extension)
    ]


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the accelerated modules' ``.py`` files, ignoring compiled builds beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in ACCELERATED or not path:
            return None
        leaf = fullname.rsplit(".", 1)[1]
        for folder in path:
            source = Path(folder) / f"{leaf}.py"
            if source.exists():
                return spec_from_file_location(fullname, source)
        return None


def force_pure() -> None:
    """Import the accelerated modules from source from now on (call before importing them)."""
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


if os.environ.get("APOS_PURE", "").lower() in ("1", "true", "yes"):
    force_pure()
