# Sa2VA-Qwen3-VL: Qwen3-VL-4B-Instruct + SAM2 Hiera-L, full size.
# Needs the current environment (transformers >= 4.57; .venv-current).
#
# The Qwen2.5-VL base (./sa2va_qwen2_5_vl.py) with the Qwen3-VL checkpoint and
# image steps: the newest Sa2VA codebase builds both the same way
# (projects/sa2va/models/mllm/qwen3vl.py differs from qwenvl.py only in the
# transformers class; projects/sa2va/configs/sa2va_qwenvl3/sa2va_qwen3_4b.py
# has the same freezing, LoRA r 128 / alpha 256 / dropout 0.05,
# modules_to_save and pixel budgets as sa2va_qwen25_3b.py). QwenVLChat reads
# model_type (qwen3_vl) from the checkpoint's config.json; the deepstack
# mergers are frozen with the merger (freeze_mlp1).
_base_ = ['./sa2va_qwen2_5_vl.py']

from projects.sa2va.transforms.qwen_vl import qwen_vl_pipeline_swaps as _swaps  # noqa: E402

sa2va_qwen_vl_path = './pretrained/Qwen3-VL-4B-Instruct'
qwen_vl_backbone = 'qwen3_vl'
qwen_vl_pipeline_swaps = dict(_delete_=True, **_swaps(
    qwen_vl_backbone, video=_base_.qwen_vl_frame_pixels.to_dict(),  # noqa: F821
    as_uint8=_base_.qwen_vl_patches_uint8, **_base_.qwen_vl_image_pixels))  # noqa: F821
qwen_vl_text_settings = dict(tokenizer=sa2va_qwen_vl_path)

model = dict(data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
             mllm=dict(model_path=sa2va_qwen_vl_path))
