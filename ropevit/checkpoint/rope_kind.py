"""What a checkpoint without RoPE frequencies was trained with, and what loading it means.

A RoPE-Axial checkpoint stores no frequencies (they are fixed), and neither does a plain ViT / Swin.
Both ViT and Swin converters decide between the two the same way: ``checkpoint_rope`` says it, or
(``'auto'``) the checkpoint is read as RoPE-Axial, with a warning wherever that guess may be wrong.
"""
from __future__ import annotations

from typing import NamedTuple

from .common import ConversionLog


class Family(NamedTuple):
    """How a backbone family's checkpoints read. ``positions``: the other position encoding a
    frequency-less checkpoint may carry (``'an absolute position embedding'``); ``ambiguity``: what such
    a checkpoint may be; ``plain``: the family's plain model (``'ViT'``)."""
    plain: str
    positions: str
    ambiguity: str


VIT = Family('ViT', 'an absolute position embedding', 'either RoPE-Axial + APE or a plain ViT (no RoPE)')
SWIN = Family('Swin', 'a relative position bias',
              'either a plain Swin (no RoPE) or a RoPE-Swin-Axial trained with use_rpb=True')


def frequencyless_kind(checkpoint_rope: str, *, has_positions: bool, model_rope: str, theta: float,
                       family: Family, log: ConversionLog) -> str:
    """``'axial'`` or ``'none'``: what a checkpoint without frequencies holds. With ``'auto'`` it is read
    as RoPE-Axial (``theta``: the one it is read with); a WARNING goes to ``log`` where the guess may be
    wrong (``has_positions`` and a RoPE model: it may be a plain model) or where the model drops the
    rotation the checkpoint was most likely trained with."""
    if checkpoint_rope != 'auto':
        return checkpoint_rope
    if has_positions and model_rope != 'none':
        log.warnings.append(
            f'the checkpoint has no RoPE frequencies and {family.positions}: it is {family.ambiguity}. Read as '
            f'RoPE-Axial (theta {theta:g}). If it is a plain {family.plain}, RoPE is new in this model and it '
            'computes another function than the checkpoint until fine-tuned. Set init_cfg checkpoint_rope="axial" '
            'or "none" to say which (and silence this warning)')
    elif not has_positions and model_rope == 'none':
        log.warnings.append(
            f'the checkpoint has neither RoPE frequencies nor {family.positions}, so it was most likely trained '
            'with RoPE-Axial; this model has rope="none" and no rotation: it computes another function than the '
            'checkpoint. Build it with rope="axial" (or set checkpoint_rope="none" if the checkpoint was trained '
            'without positions)')
    return 'axial'


def warn_plain_into_rope(model_rope: str, *, family: Family, log: ConversionLog) -> None:
    """``checkpoint_rope='none'`` into a RoPE model: say what that means."""
    log.warnings.append(f'plain {family.plain} checkpoint (checkpoint_rope="none") into a rope="{model_rope}" '
                        'model: RoPE rotates queries and keys the checkpoint was trained without, so the model '
                        'computes another function than the checkpoint until fine-tuned')


def mixed_into_axial_hint(key_pattern: str) -> str:
    """The hint for learned RoPE-Mixed frequencies (``key_pattern``) left unexpected by an axial model."""
    return ('learned RoPE-Mixed frequencies, but the model has rope="axial"; build it with rope="mixed" to keep '
            f'them, or set allow_unexpected=["{key_pattern}"] to drop them (the axial model then computes another '
            'function than the checkpoint and needs fine-tuning)')
