"""The data-set checks live in :mod:`ropevit.datacheck` (plain Python, so that the tools can run them
before importing torch); this module keeps the old import path."""
from ropevit.datacheck import *  # noqa: F401,F403
from ropevit.datacheck import __all__  # noqa: F401
