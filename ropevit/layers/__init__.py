"""Building blocks of the backbones, one per module (plain PyTorch).

* ``rope``: 2D RoPE math as pure functions (coordinates, frequencies, ``apply_rope``).
* ``rope_tables``: the one contract between backbones and attention, :class:`RopeTables`,
  how tables are built, and :class:`TableCache` (the compile / inference-mode rules).
* ``vit_rope``: RoPE-ViT's frequencies (``rope.freqs``) and their per-grid tables.
* ``window``: window partition, padding, shift masks and the window rule.
* ``patch_embed``, ``pos_embed``, ``patch_merging``, ``ffn``: stems, APE resize, Swin's
  downsampling and MLP.
* ``attention`` / ``vit_block``: RoPE-ViT's attention and block (global or ViTDet windows).
* ``swin_attention`` / ``swin_block`` / ``swin_stage``: RoPE-Swin's (shifted) window
  attention, block, and the stage that builds masks and tables once per forward.
"""
from .rope_tables import RopeTables, TableCache  # noqa: F401
