"""Deployment: ``torch.export`` and ONNX export of the backbones, necks and whole segmentors
with dynamic sizes, checked in onnxruntime against eager PyTorch (docs/DEPLOY.md)."""
from .export import (EXPORTERS, compare, export_onnx, export_program, flatten_outputs, image_dynamic_shapes,
                     max_abs_diff, onnx_session, run_onnx, size_oblivious)

__all__ = ['EXPORTERS', 'compare', 'export_onnx', 'export_program', 'flatten_outputs', 'image_dynamic_shapes',
           'max_abs_diff', 'onnx_session', 'run_onnx', 'size_oblivious']
