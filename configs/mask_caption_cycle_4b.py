# The owner's main mask <-> caption run ("len256_bs16_topk512_lr4e-5_acc2_
# savALL_sa1b2500_oi200k", mask-caption-cycle.md section 6): InternVL2.5-4B +
# SAM2 hiera-L from a Sa2VA-4B checkpoint, loop 1 (EMA teacher T = 256,
# corruption 0.25, top-k 512 ST Gumbel tau 0.7) + the RefCOCO stream
# interleaved evenly (one RefCOCO batch first), 16 per GPU x accumulate 2,
# AdamW lr 4e-5 constant from the first iteration (no warm-up, no decay),
# EMA 0.999, RefCOCO one expression per image.
# Precision: frozen weights bf16 as the owner; the trainable ones (LoRA, mlp1,
# text_hidden_fcs, SAM2 mask decoder) fp32 master weights (trainable_dtype;
# the owner: bf16, where a 4e-5 AdamW step rounds away on most weights), the
# forward under bf16 autocast; the EMA shadow fp32 (a bf16 EMA at 0.999 would
# not move). trainable_dtype=None reproduces the owner's pure bf16.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/models/sa2va_4b.py',
    './_base_/models/mask_caption_cycle.py',
    './_base_/datasets/mask_caption.py',
]
batch_size = 16
accumulative_counts = 2
lr = 4e-5
warmup_iters = 0          # the owner: none (see param_scheduler)
# RefCOCO stream: the owner's wrapper keeps one expression per image (the
# first ref, one sentence drawn once; ~17k RefCOCO train images). 'all' (every
# sentence of every ref, ~7x as many RefCOCO batches) is the option.
refcoco_expressions = 'one_per_image'
refcoco_stream = dict(
    _base_.mc_refcoco_stream, expressions=refcoco_expressions,
    text_mode='random' if refcoco_expressions == 'one_per_image' else 'original')
max_epochs = 2

model = dict(
    _base_.mask_caption_cycle,
    # the released Sa2VA-4B directory (HF layout), read directly (docs/training.md)
    pretrained_hf='./pretrained/Sa2VA-4B',
    trainable_dtype='float32',
    data_preprocessor=dict(type='MaskCaptionCycleDataPreprocessor', dtype='bfloat16',
                           sam2_dtype='float32'))

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=4,
    persistent_workers=True,
    prefetch_factor=1,
    pin_memory=False,
    sampler=dict(type='CycleInterleaveSampler', batch_size=batch_size,
                 refcoco_ratio=None, shuffle=True),
    collate_fn=dict(type='sa2va.mask_caption_cycle_collate'),
    # loop-1 mix (the owner's caps) + the RefCOCO stream as the last part
    dataset=dict(
        type='MixedDataset',
        datasets=[{{_base_.mc_mix_savALL_sa1b2500_oi200k}},
                  dict(type='MixedDataset', datasets=[refcoco_stream])]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts)
# The LR the runner applies: lr from iteration 0, constant (the owner). One
# WarmupDecayLR sized by the runner from the run's length; a warm-up is
# --cfg-options param_scheduler.0.warmup_iters=N (linear from lr / 1000).
param_scheduler = [dict(type='WarmupDecayLR', warmup_iters=warmup_iters, start_factor=1e-3,
                        decay='constant', by_epoch=False)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=2))
# RefCOCO val during training (mask-caption-cycle.md 10.1): every checkpoint
# interval, 100 expressions, one 448 tile as in training; the evaluated
# checkpoints are kept in eval_checkpoints/ (max_keep_ckpts prunes only the
# checkpoint hook's own files). variants=tuple(VARIANTS) adds the owner's
# weight mixes; stop_below=0.5 stops a run whose cIoU falls below 0.5.
refcoco_val = dict(_base_.mc_refcoco_caption, split='val', expressions='all',
                   text_mode='original',
                   pipeline=[dict(type='LoadImage'), dict(type='DecodeMasks')])
custom_hooks = [dict(type='DataStatsHook', interval=50),
                dict(type='CycleEMAHook', caption_log_interval=50, grad_log_interval=50),
                dict(type='CycleRefCOCOEvalHook', dataset=refcoco_val, interval=500,
                     num_samples=100, max_num_tiles=1, variants=('full',),
                     stop_below=None, amp_dtype='bfloat16')]
randomness = dict(seed=42)
