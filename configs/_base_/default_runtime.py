# Runtime defaults shared by every experiment: scope, hooks, logging, env.
default_scope = 'sa2va'
# Exact resume (sampler position, RNG state, strict trainable-key loading),
# weights-only-loadable and atomic checkpoints: projects/sa2va/engine/runner.py
runner_type = 'Sa2VARunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000,
                    max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # datasets, iterations, trainable parameters and the LR curve at start;
    # refuses a schedule that ends early or trains at a negligible LR
    # (default_hooks.start_summary.check_schedule=False to train anyway)
    start_summary=dict(type='StartSummaryHook'),
)
# Counts of skipped records, repaired prompt masks, dropped turns, ... made
# in the dataloader workers, summed and logged.
custom_hooks = [dict(type='DataStatsHook', interval=50)]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

log_processor = dict(by_epoch=False, window_size=10)
# scalars.json always; TensorBoard event files when tensorboard is installed
# (pip install -e '.[tensorboard]'; tensorboard --logdir work_dirs)
visualizer = dict(type='Visualizer',
                  vis_backends=[dict(type='LocalVisBackend'),
                                dict(type='TensorboardIfInstalled')])
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42, deterministic=False)
