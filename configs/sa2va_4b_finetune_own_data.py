# Fine-tune Sa2VA-4B on your own data alone (the own-data format:
# docs/datasets.md, "Fine-tune on your own data"; data under
# ./data/my_data/: annotations.json, images/, masks/).
#
#   python tools/export.py --import-hf ./pretrained/Sa2VA-4B \
#       --config configs/sa2va_4b_finetune_own_data.py --out ./pretrained/sa2va_4b.pth
#   python tools/check_data.py configs/sa2va_4b_finetune_own_data.py
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_4b_finetune_own_data.py --launcher pytorch
#
# The Sa2VA-4B model and optimiser (LoRA r128, AdamW 4e-5, 5% warm-up +
# cosine sized from the run, batch 2 x accumulate 4), starting from the
# released Sa2VA-4B weights imported into ./pretrained/sa2va_4b.pth (the
# first command). Drop a task by removing its dataset from `datasets`.
_base_ = [
    './_base_/default_runtime.py',
    './_base_/schedules/sa2va_schedule.py',
    './_base_/models/sa2va_4b.py',
    './_base_/datasets/own_data.py',
]

model = dict(pretrained_pth='./pretrained/sa2va_4b.pth')

tokenizer_path = './pretrained/InternVL2_5-4B'
text_settings = dict(tokenizer=tokenizer_path, template='phi3_chat',
                     max_length=8192)
max_epochs = 3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='LengthGroupedSampler', per_device_batch_size=2 * 4),
    collate_fn=dict(type='sa2va.sa2va_collate_fn', pad_index=151643),
    dataset=dict(
        type='MixedDataset',
        datasets=[{{_base_.own_referring}}, {{_base_.own_region_caption}},
                  {{_base_.own_conversation}}],
        repeats=[1, 1, 1],
        pipeline_defaults=dict(EncodeConversation=text_settings)))
default_hooks = dict(checkpoint=dict(interval=500))
