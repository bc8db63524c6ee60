"""A hook for the end-to-end tests that run ``tools/train.py`` in a subprocess (custom_imports=['e2e_hooks']):
evaluate once before the first iteration, so the log holds the metrics of the model as initialised."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ValBeforeTrainHook(Hook):
    """Runs the validation loop in ``before_train`` (mmengine validates only after iterations)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        runner.val_loop.run()
