# Sa2VA model, tiny, on a qwen3_vl MLLM: sa2va_qwen2_5_vl_tiny.py with the
# Qwen3-VL tiny config (16 px patches, deepstack merger on vision block 0,
# interleaved mrope). Data: QwenVLImageInput(backbone='qwen3_vl').
_base_ = ['./sa2va_qwen2_5_vl_tiny.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402

model = dict(mllm=dict(config=dict(_delete_=True,
                                   **tiny_qwen_vl_config('qwen3_vl', vocab_size=1024))))
