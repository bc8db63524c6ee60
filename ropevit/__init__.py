"""ropevit: rotary position embeddings for dense prediction (plain PyTorch core).

The mm-series registration lives in :mod:`ropevit.mm`; configs pull it in with
``custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)``.
"""
__version__ = '0.1.0'
