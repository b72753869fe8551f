"""The examples in the core's docstrings are tests too: keep them true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import apos.core
from apos.accel import ACCELERATED

from .helpers import pure_module

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(apos.core.__path__, prefix="apos.core.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    if not str(getattr(module, "__file__", "")).endswith(".py"):
        module = pure_module(name)  # a compiled build (make accel) keeps no examples
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    if name in ACCELERATED:  # their examples are read from the source, compiled or not
        assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
