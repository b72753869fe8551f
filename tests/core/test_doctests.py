"""The examples in the core's docstrings are tests too: keep them true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import apos.core

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(apos.core.__path__, prefix="apos.core.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
