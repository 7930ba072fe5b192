# Sa2VA-Qwen2.5-VL: Qwen2.5-VL-3B-Instruct + SAM2 Hiera-L, full size.
# Needs the current environment (transformers >= 4.57; .venv-current).
#
# Checkpoints (see docs/models.md, "Qwen-VL backbones"):
# ./pretrained/Qwen2.5-VL-3B-Instruct (the official Qwen directory: config.json,
# safetensors, tokenizer and preprocessor files) and
# ./pretrained/sam2_hiera_large.pt. The tokenizer is read from the Qwen
# directory; the model adds only [SEG], <p>, </p>, <vp>, </vp> (images use
# Qwen's own <|vision_start|> <|image_pad|> <|vision_end|>).
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
_base_ = ['./sa2va_4b.py']

sa2va_qwen_vl_path = './pretrained/Qwen2.5-VL-3B-Instruct'

model = dict(
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
