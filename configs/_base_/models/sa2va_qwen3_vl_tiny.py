# Sa2VA model, tiny, on a qwen3_vl MLLM: sa2va_qwen2_5_vl_tiny.py with the
# Qwen3-VL tiny config (16 px patches, deepstack merger on vision block 0,
# interleaved mrope) and its image steps (QwenVL*(backbone='qwen3_vl'), the
# same 4 x 4 merged-token budget: 32 px per merged token).
_base_ = ['./sa2va_qwen2_5_vl_tiny.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402
from projects.sa2va.transforms.qwen_vl import tiny_qwen_vl_pipeline_swaps  # noqa: E402

qwen_vl_backbone = 'qwen3_vl'
qwen_vl_pipeline_swaps = dict(_delete_=True, **tiny_qwen_vl_pipeline_swaps(qwen_vl_backbone))

model = dict(data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
             mllm=dict(config=dict(_delete_=True,
                                   **tiny_qwen_vl_config(qwen_vl_backbone, vocab_size=1024))))
