# configs/sa2va_4b_finetune_own_data.py on a CPU: the tiny demo's model,
# optimiser and schedule (configs/sa2va_tiny_demo.py) trained on the
# own-data sample alone, written by `tools/make_sample_data.py` under
# data/sample/my_data/.
#
#   python tools/make_sample_data.py --out data/sample
#   python tools/train.py configs/sa2va_tiny_finetune_own_data.py
#
# Your own data instead: a copy of this file with `own_root` changed.
_base_ = ['./sa2va_tiny_demo.py', './_base_/datasets/own_data.py']

own_root = 'data/sample/my_data/'
text_settings = {{_base_.text_settings}}
own = dict(data_root=own_root)

train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='MixedDataset',
    datasets=[dict(_base_.own_referring, **own),
              dict(_base_.own_region_caption, **own),
              dict(_base_.own_conversation, **own)],
    pipeline_defaults=dict(EncodeConversation=text_settings,
                           SAM2Input=dict(size=256)),
    pipeline_overrides=dict(DynamicTiles=dict(max_num=2))))
train_cfg = dict(max_iters=20)
default_hooks = dict(checkpoint=dict(interval=20))
