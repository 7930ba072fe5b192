# configs/sa2va_qwen2_5_vl_tiny_demo.py on a tiny Qwen3-VL MLLM (the model
# of configs/_base_/models/sa2va_qwen3_vl_tiny.py: 16 px patches, deepstack,
# interleaved mrope) with the Qwen3-VL image steps. Needs the current
# environment (transformers >= 4.57).
#
#   python tools/make_sample_data.py --out data/sample    # data + tokenizers
#   python tools/train.py configs/sa2va_qwen3_vl_tiny_demo.py
_base_ = ['./sa2va_qwen2_5_vl_tiny_demo.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402
from projects.sa2va.transforms.qwen_vl import tiny_qwen_vl_pipeline_swaps  # noqa: E402

qwen_vl_backbone = 'qwen3_vl'
train_dataloader = dict(dataset=dict(pipeline_swaps=dict(
    _delete_=True, **tiny_qwen_vl_pipeline_swaps(qwen_vl_backbone))))
model = dict(
    data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
    mllm=dict(config=dict(_delete_=True,
                          **tiny_qwen_vl_config(qwen_vl_backbone, vocab_size=1024))))
