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
_base_ = ['./sa2va_4b.py', './_base_/datasets/own_data.py']

model = dict(pretrained_pth='./pretrained/sa2va_4b.pth')
max_epochs = 3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# the 4B dataloader (batch 2, length-grouped over the accumulation window)
# with the own-data datasets instead of the Sa2VA mix
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='MixedDataset',
    datasets=[{{_base_.own_referring}}, {{_base_.own_region_caption}},
              {{_base_.own_conversation}}],
    repeats=[1, 1, 1],
    pipeline_defaults=dict(EncodeConversation={{_base_.text_settings}})))
default_hooks = dict(checkpoint=dict(interval=500))
