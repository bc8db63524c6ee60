#!/usr/bin/env python
"""``python tools/benchmark.py ...`` = ``python -m benchmarks ...`` (the harness lives in benchmarks/)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
