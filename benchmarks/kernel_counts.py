"""Kernel ops per warm fp32 forward of Swin-T and ViT-B at 224, for the ropevit found at ROOT.

Counts with this checkout's harness (``benchmarks.measure.kernel_ops``: ATen ops that make a
tensor, views excluded) and ROOT's ``ropevit``, so older commits are counted the same way:

    git worktree add /tmp/old 682df8e
    .venv/bin/python benchmarks/kernel_counts.py /tmp/old
"""
from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

# The harness imports ropevit only inside its functions: the ropevit found at ROOT is counted.
from benchmarks.attention import swap_attention  # noqa: E402
from benchmarks.measure import kernel_ops  # noqa: E402
from benchmarks.suites import SWIN_T, build_mmdet_swin, build_ropevit  # noqa: E402


def main(root: str) -> None:
    sys.path.insert(0, os.path.abspath(root))
    from ropevit.models.swin import RoPESwin
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 224, 224)
    models = {'mmdet SwinTransformer': build_mmdet_swin(SWIN_T)}
    for rope in ('mixed', 'axial', 'none'):
        models[f'RoPESwin-T {rope}'] = RoPESwin(arch=SWIN_T, rope=rope, use_rpb=rope == 'none',
                                                drop_path_rate=0.0).eval()
    for rope in ('mixed', 'axial', 'none'):
        models[f'RoPEViT-B {rope}'] = build_ropevit('base', rope)
    with torch.no_grad():
        for name, m in models.items():
            m(x)                                            # warm: per-grid caches filled
            print(f'{name}: {kernel_ops(lambda m=m: m(x))}')
        plain = models['RoPESwin-T none']
        with swap_attention():
            print(f'Swin-T mmdet math (plain Swin, manual softmax): {kernel_ops(lambda: plain(x))}')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
