"""The fast tier: imports no torch, starts no process; ``pytest tests/unit`` runs it alone, first in CI."""
import sys

import pytest

# Whether another tier loaded torch before this one was collected (a whole-suite run): then the
# no-torch check cannot tell, and says so.
TORCH_BEFORE = "torch" in sys.modules


@pytest.fixture(scope="session")
def torch_before() -> bool:
    return TORCH_BEFORE
