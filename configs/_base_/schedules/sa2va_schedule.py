# Sa2VA's optimisation: AdamW 4e-5, betas (0.9, 0.999), weight decay 0.05,
# grad clip 1.0, bf16 AMP, batch 2 x accumulate 4; 5% linear warm-up then
# cosine to 0, by iteration.
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
    dict(type='LinearLR', start_factor=1e-5, by_epoch=True, begin=0,
         end=warmup_ratio * max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True,
         begin=warmup_ratio * max_epochs, end=max_epochs,
         convert_to_iter_based=True),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
