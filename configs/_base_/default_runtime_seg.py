# Runtime of the segmentation configs (mmseg scope, ropevit's modules registered).
default_scope = 'mmseg'
# ropevit's modules, and its runtime fixes (ropevit.mm.fixes: checkpoint loading on torch >= 2.6,
# resume past unreadable checkpoints, AMP / DDP on CPUs); docs/RELIABILITY.md
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)
custom_hooks = [dict(type='RNGStateHook')]  # exact resume: generator states in checkpoints
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
