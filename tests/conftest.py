import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
# The repository (ropevit, benchmarks, tools) and tests/ itself: the shared test helpers
# (swin_reference, demo_helpers, resume_driver) live here, the tests in folders that mirror the package.
for path in (TESTS, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

# Two cores on CI: keep intra-op threads bounded and results reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
