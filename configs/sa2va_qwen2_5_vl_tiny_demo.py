# The tiny demo (configs/sa2va_tiny_demo.py: all 21 datasets of the six
# families from data/sample, LoRA, tiny SAM2) on a tiny Qwen2.5-VL MLLM:
# the model of configs/_base_/models/sa2va_qwen2_5_vl_tiny.py, the Qwen-VL
# image steps swapped into every dataset pipeline (pipeline_swaps), the Qwen
# chat template and image tokens for every text step, the Qwen-VL collate.
# Needs the current environment (transformers >= 4.57).
#
#   python tools/make_sample_data.py --out data/sample    # data + tokenizers
#   python tools/train.py configs/sa2va_qwen2_5_vl_tiny_demo.py
_base_ = ['./sa2va_tiny_demo.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402
from projects.sa2va.transforms.qwen_vl import tiny_qwen_vl_pipeline_swaps  # noqa: E402

qwen_vl_backbone = 'qwen2_5_vl'
tokenizer_path = 'data/sample/tokenizer_qwen_vl'
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     image_tokens='qwen_vl', max_length=8192)

train_dataloader = dict(
    # the tiny Qwen-VL tokenizer pads with <|endoftext|> = 0
    collate_fn=dict(_delete_=True, type='sa2va.sa2va_qwen_vl_collate_fn',
                    pad_index=0),
    dataset=dict(
        pipeline_swaps=tiny_qwen_vl_pipeline_swaps(qwen_vl_backbone),
        pipeline_defaults=dict(
            # the sam2_size default of the replaced MaskCaptionOutputs
            QwenVLMaskCaptionOutputs=dict(sam2_size=256)),
        # every dataset, RefCOCO's v1 template included, gets Qwen's
        pipeline_overrides=dict(EncodeConversation=text_settings,
                                EncodeLLaVAConversation=text_settings)))

# the same trainable set as sa2va_tiny.py's InternVL (LoRA, frozen vision,
# trainable mergers): only the class and its transformers config change
model = dict(
    tokenizer=tokenizer_path,
    data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
    mllm=dict(type='QwenVLChat',
              config=dict(_delete_=True,
                          **tiny_qwen_vl_config(qwen_vl_backbone, vocab_size=1024))))
