"""Convert a published checkpoint to a ropevit backbone checkpoint (offline; optional,
since ``init_cfg=dict(type='Pretrained', checkpoint=...)`` converts on the fly).

    python tools/convert_checkpoint.py --model vit SRC.pth DST.pth [--num-heads N]
        [--arch small|base|large|JSON --rope axial|mixed|none [--use-ape] [--no-cls-token]]
    python tools/convert_checkpoint.py --model swin SRC.pth DST.pth

``vit``: naver-ai/rope-vit originals, timm's ports, ropevit / mmengine checkpoints
(:func:`ropevit.checkpoint.vit.convert_vit_state_dict`). With ``--arch`` the result is
also checked tensor by tensor against a freshly built ``RoPEViT`` of that shape.
``swin``: :func:`ropevit.checkpoint.swin.convert_swin_state_dict`.

The output is ``{'state_dict': converted}`` (``--prefix backbone.`` puts the keys under
a prefix, e.g. for ``load_from``); every dropped key is printed with its reason.
The input is read with ``weights_only=True`` (a checkpoint cannot run code).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

import torch


def _converter(model: str):
    """Imported lazily so one converter's absence does not break the other."""
    if model == 'vit':
        return importlib.import_module('ropevit.checkpoint.vit').convert_vit_state_dict
    try:
        return importlib.import_module('ropevit.checkpoint.swin').convert_swin_state_dict
    except ImportError as e:
        raise SystemExit(f'--model swin: the Swin converter is not available ({e})') from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='input checkpoint (.pth)')
    p.add_argument('dst', help='output checkpoint (.pth)')
    p.add_argument('--model', choices=('vit', 'swin'), required=True, help='backbone family')
    p.add_argument('--num-heads', type=int, default=None,
                   help='vit: heads, to unflatten the original RoPE-Mixed "freqs" (default: embed_dims // 64)')
    p.add_argument('--arch', default=None, help='vit: build RoPEViT(arch=ARCH) (a preset name or a JSON dict) and check every tensor against it')
    p.add_argument('--rope', default='axial', choices=('axial', 'mixed', 'none'), help='vit with --arch')
    p.add_argument('--use-ape', action='store_true', help='vit with --arch: model has a position embedding')
    p.add_argument('--no-cls-token', action='store_true', help='vit with --arch: with_cls_token=False')
    p.add_argument('--prefix', default='', help='prefix for the output keys, e.g. "backbone."')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from ropevit.checkpoint.io import load_checkpoint_file
    ckpt = load_checkpoint_file(args.src)
    convert = _converter(args.model)
    dropped: dict[str, str] = {}
    if args.model == 'vit':
        model = None
        if args.arch is not None:
            from ropevit.models.vit import RoPEViT
            arch = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
            model = RoPEViT(arch=arch, rope=args.rope, use_ape=args.use_ape,
                            with_cls_token=not args.no_cls_token)
        out = convert(ckpt, model, num_heads=args.num_heads, dropped=dropped)
        if model is not None:
            from ropevit.checkpoint.common import load_state_dict_checked
            print(load_state_dict_checked(model, out, source=args.src, dropped=dropped).summary())
    else:
        out = convert(ckpt, None, dropped=dropped)
    if args.prefix:
        out = {args.prefix + k: v for k, v in out.items()}
    torch.save({'state_dict': out}, args.dst)
    print(f'wrote {len(out)} tensors to {args.dst}')
    for key, why in sorted(dropped.items()):
        print(f'dropped {key}: {why}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
