# Sa2VA model, tiny, on a qwen2_5_vl MLLM built from transformers' own class
# (QwenVLChat, projects/sa2va/models/qwen_vl.py): 2 text layers of width 64,
# a 2-block vision tower, the same tiny SAM2, LoRA and trainable set as
# sa2va_tiny.py (mergers in the role of InternVL's mlp1). Needs the current
# stack (transformers >= 4.57); weights are seeded-random.
#
# Tokenizer: the tiny Qwen-VL tokenizer (Qwen's image tokens, no <img>),
# written by `python tools/make_sample_data.py --out data/sample`.
#
# Data (an experiment passes these to train_dataloader.dataset, see
# configs/sa2va_qwen2_5_vl_tiny_demo.py):
# - `qwen_vl_pipeline_swaps`: the mix's pipeline_swaps (DynamicTiles dropped,
#   ImagesToTensor -> QwenVLImageInput / QwenVLVideoInput, PoolPromptMasks ->
#   QwenVLPoolPromptMasks, MaskCaptionOutputs -> QwenVLMaskCaptionOutputs);
#   the budget is tiny (at most 4 x 4 merged tokens per image / frame);
# - `qwen_vl_text_settings`: pipeline_overrides of the text steps (the Qwen
#   chat template and image-token strings for every dataset);
# - collate: `qwen_vl_collate_fn`.
_base_ = ['./sa2va_tiny.py']

from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config  # noqa: E402
from projects.sa2va.transforms.qwen_vl import tiny_qwen_vl_pipeline_swaps  # noqa: E402

sa2va_tiny_qwen_vl_tokenizer = 'data/sample/tokenizer_qwen_vl'
qwen_vl_backbone = 'qwen2_5_vl'
qwen_vl_pipeline_swaps = tiny_qwen_vl_pipeline_swaps(qwen_vl_backbone)
qwen_vl_text_settings = dict(tokenizer=sa2va_tiny_qwen_vl_tokenizer,
                             template='qwen_chat', image_tokens='qwen_vl')
qwen_vl_collate_fn = dict(type='sa2va.sa2va_qwen_vl_collate_fn', pad_index=0)

model = dict(
    tokenizer=sa2va_tiny_qwen_vl_tokenizer,
    # uint8 patches (QwenVLImageInput(as_uint8=True)) get this backbone's stats
    data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
    mllm=dict(
        _delete_=True,
        type='QwenVLChat',
        config=tiny_qwen_vl_config(qwen_vl_backbone, vocab_size=1024),
        torch_dtype='float32',
        freeze_vision=True,
        freeze_llm=True,
        freeze_mlp1=False,
        llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.05)))
