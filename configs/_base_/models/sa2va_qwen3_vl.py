# Sa2VA-Qwen3-VL: Qwen3-VL-4B-Instruct + SAM2 Hiera-L, full size.
# Needs the current environment (transformers >= 4.57; .venv-current).
#
# The Qwen2.5-VL base (./sa2va_qwen2_5_vl.py) with the Qwen3-VL checkpoint:
# the newest Sa2VA codebase builds both the same way
# (projects/sa2va/models/mllm/qwen3vl.py differs from qwenvl.py only in the
# transformers class; projects/sa2va/configs/sa2va_qwenvl3/sa2va_qwen3_4b.py
# has the same freezing, LoRA r 128 / alpha 256 / dropout 0.05 and
# modules_to_save as sa2va_qwen25_3b.py). QwenVLChat reads model_type
# (qwen3_vl) from the checkpoint's config.json; its deepstack mergers are
# frozen with the merger (freeze_mlp1).
_base_ = ['./sa2va_qwen2_5_vl.py']

sa2va_qwen_vl_path = './pretrained/Qwen3-VL-4B-Instruct'

model = dict(mllm=dict(model_path=sa2va_qwen_vl_path))
