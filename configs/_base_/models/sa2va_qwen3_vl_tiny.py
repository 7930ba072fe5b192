# Sa2VA model, tiny, on a qwen3_vl MLLM built from transformers' own class
# (QwenVLChat, projects/sa2va/models/qwen_vl.py): 2 text layers of width 64,
# a 2-block vision tower, the same tiny SAM2, LoRA and trainable set as
# sa2va_tiny.py (mergers in the role of InternVL's mlp1). Needs the current
# stack (transformers >= 4.57); weights are seeded-random.
# Data: QwenVLImageInput(backbone='qwen3_vl') in place of DynamicTiles +
# ImagesToTensor, sa2va_qwen_vl_collate_fn as the collate.
_base_ = ['./sa2va_tiny.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402

model = dict(mllm=dict(
    _delete_=True,
    type='QwenVLChat',
    config=tiny_qwen_vl_config('qwen3_vl', vocab_size=1024),
    torch_dtype='float32',
    freeze_vision=True,
    freeze_llm=True,
    freeze_mlp1=False,
    llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.05)))
