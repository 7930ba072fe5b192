# The Sa2VA-4B recipe shrunk for a CPU: the same code path (every data
# family in its real on-disk format, the same pipelines, InternVL + SAM2 with
# LoRA) with a tiny InternVL, a tiny SAM2, the tiny tokenizer and the
# generated sample data. This is what `make demo` trains.
#
#   python tools/make_sample_data.py --out data/sample    # data + tokenizer
#   python tools/train.py configs/sa2va_tiny_demo.py
_base_ = [
    './_base_/default_runtime.py',
    './_base_/models/sa2va_tiny.py',
    './_base_/datasets/sa2va_mix.py',
]

sample_root = 'data/sample/'
sample_datasets = [d['dataset_name'] for d in _base_.sa2va_mix['datasets']]
tokenizer_path = sample_root + 'tokenizer'
text_settings = dict(tokenizer=tokenizer_path, template='phi3_chat',
                     max_length=8192)

train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    sampler=dict(per_device_batch_size=2, seed=0),
    # the tiny tokenizer pads with <|endoftext|> = 0
    collate_fn=dict(pad_index=0),
    dataset=dict(
        # every family once (the 4B repeats would only lengthen an epoch)
        repeats=[1] * 21,
        # the mix's own datasets read the generated copies under
        # data/sample/; a dataset added to the mix keeps its ./data/ root
        data_root_prefix=('./data/', sample_root, sample_datasets),
        pipeline_defaults=dict(
            EncodeConversation=text_settings,
            EncodeLLaVAConversation=text_settings,
            # the tiny SAM2 takes 256 x 256 frames
            SAM2Input=dict(size=256),
            MaskCaptionOutputs=dict(sam2_size=256)),
        # at most 2 tiles + thumbnail per image keeps a CPU step short
        pipeline_overrides=dict(DynamicTiles=dict(max_num=2))))

model = dict(tokenizer=tokenizer_path)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999),
                   weight_decay=0.0),
    clip_grad=dict(max_norm=1.0))
# 5% warm-up from 0.1 x, cosine to 0.1 x at the last iteration, sized from
# max_iters when the runner builds it (--cfg-options train_cfg.max_iters=N)
param_scheduler = [
    dict(type='WarmupDecayLR', warmup_ratio=0.05, start_factor=0.1,
         decay='cosine', eta_min_ratio=0.1, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100)
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=50, max_keep_ckpts=1))
custom_hooks = [dict(type='DataStatsHook', interval=20)]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
