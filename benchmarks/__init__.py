"""ropevit's benchmark: ropevit's backbones timed beside timm's ports, mmdet's Swin and the
manual-softmax attention baseline (``python -m benchmarks``; see benchmarks/README.md).

Outside the ``ropevit`` package on purpose: nothing in the library imports it.

* :mod:`benchmarks.measure` - timing (``torch.utils.benchmark.Timer``), peak memory, kernel ops, parity;
* :mod:`benchmarks.swap` - the context manager that reroutes or counts calls inside ropevit's modules;
* :mod:`benchmarks.attention` - the manual-softmax baseline, swapped in with it;
* :mod:`benchmarks.runner` - contenders, one group at one input size;
* :mod:`benchmarks.suites` - the comparisons;
* :mod:`benchmarks.report` - rows, ratios, markdown, JSON and the plot;
* :mod:`benchmarks.cli` - the command line.
"""
