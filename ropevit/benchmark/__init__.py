"""Benchmark helpers: timing, peak memory, parity checks, the manual-softmax baseline,
the comparison suites and the report (used by ``tools/benchmark.py``)."""
from .attention import manual_softmax_attention, swap_attention  # noqa: F401
from .measure import ParityError, TimeStats, check_parity, max_abs_diff, peak_memory_bytes, time_group  # noqa: F401
