# Sa2VA-Qwen2.5-VL: Qwen2.5-VL-3B-Instruct + SAM2 Hiera-L, full size.
# Needs the current environment (transformers >= 4.57; .venv-current).
#
# Checkpoints (see docs/models.md, "Qwen-VL backbones"):
# ./pretrained/Qwen2.5-VL-3B-Instruct (the official Qwen directory: config.json,
# safetensors, tokenizer and preprocessor files) and
# ./pretrained/sam2_hiera_large.pt. The tokenizer is read from the Qwen
# directory; the model adds only [SEG], <p>, </p>, <vp>, </vp> (images use
# Qwen's own <|vision_start|> <|image_pad|> <|vision_end|>) and resizes the
# embedding and lm_head to len(tokenizer), as the official add_special_tokens.
#
# Every value follows the newest Sa2VA codebase (bytedance/Sa2VA):
# - projects/sa2va/configs/sa2va_qwenvl25/sa2va_qwen25_3b.py: freeze_llm=True,
#   freeze_visual_encoder=True, LoRA r 128 / alpha 256 / dropout 0.05,
#   target_modules=None, modules_to_save=['lm_head', 'embed_tokens'];
# - projects/sa2va/models/mllm/qwenvl.py (Qwen2_5_VL): bf16 weights
#   (dtype=torch.bfloat16), gradient checkpointing on; freeze_visual_encoder is
#   `model.visual.requires_grad_(False)`, the merger included (and peft's
#   wrapping freezes every non-adapter weight anyway); target_modules=None
#   means every nn.Linear of `language_model` (the text decoder: q/k/v/o and
#   gate/up/down of each layer = QWEN_VL_LORA_TARGETS), lm_head excluded;
# - projects/sa2va/models/sa2va.py: SAM2 frozen except its mask decoder
#   (frozen_sam2_decoder=False in the config), text_hidden_fcs trained.
# The SAM2 part, losses, point sampling and data preprocessor are the InternVL
# recipe's (./sa2va_4b.py: the same SAM2TrainRunner, DiceLoss / CE values and
# 12544 points in the official config). Not taken over: flash-attention-2
# (attn_implementation is transformers' default here: SDPA).
#
# Data (an experiment passes these to train_dataloader, see
# configs/sa2va_qwen2_5_vl_3b.py):
# - `qwen_vl_pipeline_swaps`: the mix's pipeline_swaps (DynamicTiles dropped,
#   ImagesToTensor -> QwenVLImageInput / QwenVLVideoInput, PoolPromptMasks ->
#   QwenVLPoolPromptMasks, MaskCaptionOutputs -> QwenVLMaskCaptionOutputs)
#   with the official pixel budgets of datasets/base.py: an image
#   512..2048 x 28 x 28 px (min/max_pixels_single), each video frame
#   128..512 x 28 x 28 px (min/max_pixels_multi) as its own image block
#   (video_mode='frames'). Qwen3-VL gets the same pixel numbers (its 32 px
#   merged cells: 392..1568 tokens per image, Qwen2.5-VL 512..2048);
# - `qwen_vl_text_settings`: the text steps' settings for every dataset
#   (template = "qwen_chat", max_length = 8192, Qwen's image tokens, the
#   checkpoint's tokenizer);
# - `qwen_vl_collate_fn`: the Qwen-VL collate, pad <|endoftext|> = 151643.
_base_ = ['./sa2va_4b.py']

from projects.sa2va.transforms.qwen_vl import qwen_vl_pipeline_swaps as _swaps  # noqa: E402

sa2va_qwen_vl_path = './pretrained/Qwen2.5-VL-3B-Instruct'
qwen_vl_backbone = 'qwen2_5_vl'
qwen_vl_image_pixels = dict(min_pixels=512 * 28 * 28, max_pixels=2048 * 28 * 28)
qwen_vl_frame_pixels = dict(video_mode='frames', min_pixels=128 * 28 * 28,
                            max_pixels=512 * 28 * 28)
# patches travel from the workers as uint8 (as InternVL's tiles), normalised by the
# data preprocessor with the backbone's mean / std (qwen_vl_stats below)
qwen_vl_patches_uint8 = True
qwen_vl_pipeline_swaps = _swaps(qwen_vl_backbone, video=qwen_vl_frame_pixels,
                                as_uint8=qwen_vl_patches_uint8, **qwen_vl_image_pixels)
qwen_vl_text_settings = dict(tokenizer=sa2va_qwen_vl_path, template='qwen_chat',
                             max_length=8192, image_tokens='qwen_vl')
qwen_vl_collate_fn = dict(type='sa2va.sa2va_qwen_vl_collate_fn', pad_index=151643)

model = dict(
    # the uint8 patches get this backbone's stats
    data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
    mllm=dict(
        _delete_=True,
        type='QwenVLChat',
        model_path=sa2va_qwen_vl_path,
        torch_dtype='bfloat16',
        freeze_vision=True,
        freeze_mlp1=True,      # the merger too (model.visual.requires_grad_(False))
        freeze_llm=True,
        llm_lora=dict(r=128, lora_alpha=256, lora_dropout=0.05),
        gradient_checkpointing=True))
