"""Importing this module turns on every fix of :mod:`ropevit.mm.runtime` (``runtime.enable()``).

It exists for configs: MMEngine imports ``custom_imports`` when it reads the config, before the
Runner exists, so one line turns the fixes on for any ``train.py``::

    custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)

The checkpoint and resume guarantees also need the two hooks (docs/RELIABILITY.md)::

    default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
    custom_hooks = [dict(type='RNGStateHook')]
"""
from .runtime import enable

enable()
