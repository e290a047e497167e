"""Every docstring example in the package runs and is right (those that need a model, a camera or a
server say ``# doctest: +SKIP``); ``tests/unit`` runs the torch-free modules' alone."""
import doctest
import importlib
import pkgutil

import pytest

import imgclass

MODULES = [m.name for m in pkgutil.walk_packages(imgclass.__path__, "imgclass.") if not m.name.endswith("__main__")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    module = pytest.importorskip(name, reason=f"{name} needs an optional extra")
    monkeypatch.chdir(imgclass.__path__[0] + "/../..")  # examples name examples/images/ from the checkout
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failed == 0
