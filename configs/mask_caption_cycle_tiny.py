# The mask <-> caption cycle on the tiny model and the generated sample data
# (data/sample/, `make sample-data`): SA-V npz pairs + SA-1B + OpenImage for
# loop 1, RefCOCO captions interleaved. Runs on CPU in tests.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/models/mask_caption_cycle_tiny.py',
    './_base_/datasets/mask_caption.py',
]
sample_root = 'data/sample/'
batch_size = 2
model = dict(tokenizer=sample_root + 'tokenizer')

tiny_data = dict(data_root_prefix=('./data/', sample_root),
                 pipeline_overrides=dict(MaskCaptionOutputs=dict(sam2_size=256)))
# the loader's parts, named for the dual-loop variant
cycle_pseudo_part = dict(type='MixedDataset',
                         datasets=[{{_base_.mc_sav_npz}}, {{_base_.mc_sa1b}},
                                   {{_base_.mc_openimage}}], **tiny_data)
cycle_ref_part = dict(type='MixedDataset', datasets=[{{_base_.mc_refcoco_stream}}],
                      **tiny_data)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    sampler=dict(type='CycleInterleaveSampler', batch_size=batch_size,
                 refcoco_ratio=0.25, shuffle=True, seed=0),
    collate_fn=dict(type='sa2va.mask_caption_cycle_collate'),
    dataset=dict(type='MixedDataset', datasets=[cycle_pseudo_part, cycle_ref_part]))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=10, max_keep_ckpts=1))
custom_hooks = [dict(type='CycleEMAHook', caption_log_interval=5)]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
