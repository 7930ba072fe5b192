# Sa2VA-Qwen2.5-VL-3B: Qwen2.5-VL-3B-Instruct + SAM2 Hiera-L on the Sa2VA mix
# (all six families). Needs the current environment (.venv-current).
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_qwen2_5_vl_3b.py --launcher pytorch
#
# Recipe values of the newest Sa2VA codebase (bytedance/Sa2VA,
# projects/sa2va/configs/sa2va_qwenvl25/sa2va_qwen25_3b.py, the config of the
# released Sa2VA-Qwen2_5-VL-3B), each line below says which value it takes.
# The model (QwenVLChat, freezing, LoRA, bf16, gradient checkpointing) is
# ./_base_/models/sa2va_qwen2_5_vl.py; AdamW lr 4e-5, betas (0.9, 0.999),
# weight decay 0.05, clip 1.0, 5% warm-up from 1e-5 x then cosine to 0, one
# epoch, bf16 AMP are ./_base_/schedules/sa2va_schedule.py (the same values:
# lr, betas, weight_decay, max_norm, warmup_ratio, max_epochs of the official
# config; WarmupDecayLR = its LinearLR + CosineAnnealingLR pair).
# Image path: the Qwen-VL pipeline steps replace DynamicTiles / ImagesToTensor /
# PoolPromptMasks / MaskCaptionOutputs in every dataset (MixedDataset
# pipeline_swaps), the official
# per-image pixel budget (datasets/base.py: 512..2048 x 28 x 28 for an image,
# 128..512 x 28 x 28 for each video frame, one image block per frame).
# Not taken over: the official data list drops the visual-prompt datasets
# ("remove vp due to not supported yet") and doubles the GCG repeats
# (10/100/10/10); this project trains the Sa2VA mix of
# ./_base_/datasets/sa2va_mix.py, visual prompts included (pooled on the
# merged grid).
_base_ = [
    './_base_/default_runtime.py',
    './_base_/schedules/sa2va_schedule.py',
    './_base_/models/sa2va_qwen2_5_vl.py',
    './_base_/datasets/sa2va_mix.py',
]

model = dict(
    # modules_to_save=['lm_head', 'embed_tokens']: whole matrices trained
    train_embeddings='all',
    # check_obj_number(fix_number=5) in models/sa2va.py, every arch_type
    fix_objects=5)

accumulative_counts = 8                        # accumulative_counts = 8 (on 16 gpus)
optim_wrapper = dict(accumulative_counts=accumulative_counts)
default_hooks = dict(checkpoint=dict(interval=2000,      # save_steps = 2000
                                     max_keep_ckpts=2))  # save_total_limit = 2

# The model base's data settings (see ./_base_/models/sa2va_qwen2_5_vl.py):
# template "qwen_chat" and max_length 8192 for every dataset, RefCOCO too
# (Sa2VA01RefSeg encodes with the config's prompt_template, not Sa2VA v1's
# phi3-style RefCOCO routine of refseg.py); the checkpoint's tokenizer.
train_dataloader = dict(
    batch_size=2,                                                   # batch_size = 2
    sampler=dict(per_device_batch_size=2 * accumulative_counts),    # LengthGroupedSampler
    collate_fn=dict(_delete_=True, **_base_.qwen_vl_collate_fn),    # noqa: F821
    dataset=dict(
        pipeline_swaps=_base_.qwen_vl_pipeline_swaps,               # noqa: F821
        pipeline_overrides=dict(
            EncodeConversation=_base_.qwen_vl_text_settings,        # noqa: F821
            EncodeLLaVAConversation=_base_.qwen_vl_text_settings)))  # noqa: F821
