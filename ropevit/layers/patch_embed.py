"""Patch embedding of both backbones: a non-overlapping ``patch_size`` convolution."""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layer_types import NormLayer
from .tracing import is_exporting


class PatchEmbed(nn.Module):
    """``[B, C_in, H, W]`` -> ``([B, h*w, C], (h, w))`` with ``h = ceil(H / patch_size)``.

    The image is zero-padded at the bottom/right to a patch multiple first (mmdet's
    ``padding='corner'``), so any input size works.

    Args:
        in_channels: image channels ``C_in``.
        embed_dims: output channels ``C``.
        patch_size: kernel and stride of the convolution.
        norm_layer: norm applied to the tokens (Swin's ``patch_norm``), or None.
        proj_name: attribute (state-dict key) of the convolution: ``'proj'`` as in timm's
            and the original RoPE-ViT (``patch_embed.proj.*``), ``'projection'`` as in mmdet's
            Swin (``patch_embed.projection.*``), so each backbone loads its checkpoints as they are.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, *,
                 norm_layer: Optional[NormLayer] = None,
                 proj_name: Literal['proj', 'projection'] = 'proj') -> None:
        super().__init__()
        if proj_name not in ('proj', 'projection'):
            raise ValueError(f'PatchEmbed: proj_name={proj_name!r}; allowed: "proj", "projection"')
        self.patch_size = patch_size
        self.proj_name = proj_name
        self.add_module(proj_name, nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size))
        self.norm = norm_layer(embed_dims) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch_size
        H, W = x.shape[-2:]
        if is_exporting() or H % p or W % p:                    # exported: pad by maybe 0, no branch
            x = F.pad(x, (0, (-W) % p, 0, (-H) % p))            # [B, C_in, Hp, Wp]
        x = getattr(self, self.proj_name)(x)                    # [B, C, h, w]
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)                        # [B, h*w, C]
        if self.norm is not None:
            x = self.norm(x)
        return x, hw

    def extra_repr(self) -> str:
        return f'patch_size={self.patch_size}'


def patch_resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """``[new_h * new_w, old_h * old_w]`` float64 matrix of the bicubic resize of one patch
    (``F.interpolate(mode='bicubic', align_corners=False)``), column ``j`` = the resized basis patch ``j``."""
    n = old[0] * old[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *old)               # [n, 1, oh, ow]
    resized = F.interpolate(basis, size=new, mode='bicubic', align_corners=False)  # [n, 1, nh, nw]
    return resized.reshape(n, -1).T


def resample_patch_kernel(weight: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """A patch-embedding kernel ``[C, C_in, p, p]`` for patches of ``new_size`` (FlexiViT's PI-resize).

    With ``R`` the resize matrix of a patch (:func:`patch_resize_matrix`), the new kernel is
    ``w' = pinv(R^T) w`` per output/input channel: the least-squares solution of
    ``<R x, w'> = <x, w>`` over all patches ``x``. When the patch grows (``p' >= p``, e.g. EVA-02's 14
    to ViTDet's 16) ``R`` has full column rank and the equality is exact: a patch and its bicubic
    upsampling embed to the same token.
    """
    old = tuple(weight.shape[-2:])
    new = (int(new_size[0]), int(new_size[1]))
    if old == new:
        return weight
    resize = patch_resize_matrix(old, new)                                      # [n_new, n_old]
    inv = torch.linalg.pinv(resize.T)                                           # [n_new, n_old]
    flat = weight.to(torch.float64).reshape(*weight.shape[:2], -1)              # [C, C_in, n_old]
    out = flat @ inv.T                                                          # [C, C_in, n_new]
    return out.reshape(*weight.shape[:2], *new).to(weight.dtype)
