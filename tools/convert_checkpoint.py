"""Convert a published checkpoint to a ropevit backbone checkpoint (offline; optional,
since ``init_cfg=dict(type='Pretrained', checkpoint=...)`` converts on the fly).

    python tools/convert_checkpoint.py --model vit SRC.pth DST.pth [--num-heads N]
        [--arch small|base|large|JSON --rope axial|mixed|none [--use-ape] [--no-cls-token]]
    python tools/convert_checkpoint.py --model vit SRC.safetensors DST.pth --preset dinov3|eva02
        [--arch tiny|small|base|large|JSON] [--patch-size 16 --pretrain-img-size 256]
    python tools/convert_checkpoint.py --model swin SRC.pth DST.pth

``vit``: naver-ai/rope-vit originals, timm's ports, ropevit / mmengine checkpoints
(:func:`ropevit.checkpoint.vit.convert_vit_state_dict`). With ``--arch`` the result is
also checked tensor by tensor against a freshly built ``RoPEViT`` of that shape, as
strictly as ``init_cfg`` loading (an axial checkpoint with ``--rope mixed`` gets the exact
axial frequencies in the mixed layout).
``--preset`` builds the model of a family (:data:`ropevit.models.vit.VIT_PRESETS`: timm's DINOv3 /
EVA-02 weights, ``.pth`` or ``.safetensors``) instead; ``--patch-size`` / ``--pretrain-img-size``
override the family's (EVA-02 at patch 16 as the detection configs: the patch kernel is resized).
``swin``: :func:`ropevit.checkpoint.swin.convert_swin_state_dict`.

The output is ``{'state_dict': converted}`` (``--prefix backbone.`` puts the keys under
a prefix, e.g. for ``load_from``); every dropped key is printed with its reason.
The input is read with ``weights_only=True`` (a checkpoint cannot run code). DST is written
atomically (a temporary sibling renamed onto it) and may not be SRC. Bad input is one line and exit 2
(``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
from ropevit.cli import OneLineArgumentParser, ToolError, run_tool  # noqa: E402


def _converter(model: str):
    """Imported lazily so one converter's absence does not break the other."""
    if model == 'vit':
        return importlib.import_module('ropevit.checkpoint.vit').convert_vit_state_dict
    try:
        return importlib.import_module('ropevit.checkpoint.swin').convert_swin_state_dict
    except ImportError as e:
        raise ToolError(f'--model swin: the Swin converter is not available ({e})') from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='input checkpoint (.pth, or .safetensors)')
    p.add_argument('dst', help='output checkpoint (.pth)')
    p.add_argument('--model', choices=('vit', 'swin'), required=True, help='backbone family')
    p.add_argument('--num-heads', type=int, default=None,
                   help='vit: heads, to unflatten the original RoPE-Mixed "freqs" (default: embed_dims // 64)')
    p.add_argument('--arch', default=None, help='vit: build RoPEViT(arch=ARCH) (a preset name or a JSON dict) and check every tensor against it')
    p.add_argument('--preset', default=None, choices=('dinov3', 'eva02'),
                   help='vit: build RoPEViT.from_preset(PRESET, arch=ARCH or "base") and check every tensor')
    p.add_argument('--patch-size', type=int, default=None, help='vit with --preset: override its patch size')
    p.add_argument('--pretrain-img-size', type=int, default=None, help='vit with --preset: override it')
    p.add_argument('--rope', default=None, choices=('axial', 'mixed', 'none'),
                   help='vit with --arch (default axial; set by --preset)')
    p.add_argument('--use-ape', action='store_true', help='vit with --arch: model has a position embedding')
    p.add_argument('--no-cls-token', action='store_true', help='vit with --arch: with_cls_token=False')
    p.add_argument('--prefix', default='', help='prefix for the output keys, e.g. "backbone."')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from ropevit.fileio import atomic_write, looks_like_torch_file, same_file
    if same_file(args.src, args.dst):
        raise ToolError(f'SRC and DST are the same file ({args.src!r}); converting in place would replace the '
                        f'original checkpoint. Give another DST')
    if not osp.isfile(args.src):
        raise ToolError(f'checkpoint not found: {args.src!r}')
    family_flags = [f for f, v in (('--rope', args.rope), ('--use-ape', args.use_ape),
                                   ('--no-cls-token', args.no_cls_token)) if v]
    if args.preset and family_flags:
        raise ToolError(f'{", ".join(family_flags)}: set by --preset {args.preset}; leave them out')
    if not args.preset and (args.patch_size or args.pretrain_img_size):
        raise ToolError('--patch-size / --pretrain-img-size need --preset')
    if args.preset and args.model != 'vit':
        raise ToolError(f'--preset {args.preset} is a ViT family: use --model vit')
    if not args.src.endswith('.safetensors') and not looks_like_torch_file(args.src):
        raise ToolError(f'could not read checkpoint {args.src} (truncated or not a torch checkpoint); give a '
                        f'complete checkpoint written by torch.save')
    arch = None
    if args.model == 'vit' and args.arch is not None:
        try:
            arch = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
        except ValueError as e:
            raise ToolError(f'--arch {args.arch!r} is not valid JSON ({e}); give a preset name or a '
                            f'dict such as \'{{"embed_dims": 384, "num_heads": 6, "depth": 12}}\'') from None
    import torch

    from ropevit.checkpoint.io import load_checkpoint_file
    ckpt = load_checkpoint_file(args.src)
    convert = _converter(args.model)
    from ropevit.checkpoint.common import ConversionLog
    log = ConversionLog()
    if args.model == 'vit':
        model = None
        from ropevit.models.vit import RoPEViT
        if args.preset is not None:
            sizes = {k: v for k, v in (('patch_size', args.patch_size),
                                       ('pretrain_img_size', args.pretrain_img_size)) if v}
            try:
                model = RoPEViT.from_preset(args.preset, arch=arch or 'base', **sizes)
            except (ValueError, TypeError) as e:
                raise ToolError(f'--preset {args.preset} --arch {args.arch!r}: {e}') from None
        elif args.arch is not None:
            try:
                model = RoPEViT(arch=arch, rope=args.rope or 'axial', use_ape=args.use_ape,
                                with_cls_token=not args.no_cls_token)
            except (ValueError, TypeError) as e:
                raise ToolError(f'--arch {args.arch!r}: {e}') from None
        out = convert(ckpt, model, num_heads=args.num_heads, log=log)
        if model is not None:
            # The same strict check as init_cfg loading: every tensor must fit (names what does not).
            from ropevit.checkpoint.common import load_state_dict_checked
            from ropevit.checkpoint.vit import EXPECTED_NEW_KEYS
            print(load_state_dict_checked(model, out, source=args.src, log=log,
                                          expected_new=EXPECTED_NEW_KEYS).summary())
    else:
        out = convert(ckpt, None, log=log)
    if args.prefix:
        out = {args.prefix + k: v for k, v in out.items()}
    with atomic_write(args.dst, 'wb') as f:
        torch.save({'state_dict': out}, f)
    print(f'wrote {len(out)} tensors to {args.dst}')
    for key, why in sorted(log.dropped.items()):
        print(f'dropped {key}: {why}')
    for key, how in sorted(log.converted.items()):
        print(f'converted {key}: {how}')
    for message in log.warnings:
        print(f'WARNING: {message}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
