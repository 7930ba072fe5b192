# Sa2VA's optimisation: AdamW 4e-5, betas (0.9, 0.999), weight decay 0.05,
# grad clip 1.0, bf16 AMP, batch 2 x accumulate 4; 5% linear warm-up from
# 1e-5 x the LR, then cosine to 0, by iteration.
#
# WarmupDecayLR (projects/sa2va/engine/schedules.py) has no `end`: the runner
# sets it to the run's real length (max_epochs x iterations per epoch, or
# max_iters), so the warm-up is 5% and the cosine reaches 0 at the last
# iteration whatever the data size or `--cfg-options train_cfg.max_epochs=N`.
lr = 4e-5
accumulative_counts = 4
max_epochs = 1
warmup_ratio = 0.05

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale='dynamic',
)

param_scheduler = [
    dict(type='WarmupDecayLR', warmup_ratio=warmup_ratio, start_factor=1e-5,
         decay='cosine', eta_min=0.0, by_epoch=False),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
