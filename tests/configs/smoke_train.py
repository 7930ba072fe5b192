# Wiring check: real LLaVA-format data, real pipeline, collate, sampler,
# data preprocessor and hooks, with a toy model (tests/toy_model.py).
# Data: tests write it with tests/smoke_data.py; by hand:
#   python -c "from tests.smoke_data import write_smoke_data as w; w('data/smoke')"
_base_ = ['../../configs/_base_/default_runtime.py']

custom_imports = dict(imports=['tests.toy_model'], allow_failed_imports=False)

data_root = 'data/smoke/'
tokenizer = data_root + 'tokenizer'

model = dict(type='ToyConversationModel', vocab_size=2048, dim=16,
             data_preprocessor=dict(type='Sa2VADataPreprocessor'))

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='LengthGroupedSampler', per_device_batch_size=2),
    collate_fn=dict(type='sa2va.sa2va_collate_fn', pad_index=0),
    dataset=dict(
        type='LLaVADataset',
        data_root=data_root,
        ann_file='llava.json',
        data_prefix=dict(img_path='images'),
        max_num_tiles=2,
        pipeline=[
            dict(type='LoadImage', allow_text_only=True),
            dict(type='DynamicTiles', max_num=2, image_size=28),
            dict(type='ImagesToTensor', image_size=28),
            dict(type='EncodeConversation', tokenizer=tokenizer,
                 template='internvl2_5', max_length=1024,
                 tokens_per_tile=4),
            dict(type='PackInputs'),
        ]))

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-2))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False,
                        begin=0, end=4)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=8)
default_hooks = dict(
    logger=dict(interval=2),
    checkpoint=dict(interval=4, max_keep_ckpts=2))
custom_hooks = [dict(type='DataStatsHook', interval=4)]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
