# Sa2VA-Qwen3-VL-2B: Qwen3-VL-2B-Instruct + SAM2 Hiera-L on the Sa2VA mix.
# Needs the current environment (.venv-current).
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_qwen3_vl_2b.py --launcher pytorch
#
# The newest Sa2VA codebase has no 2B config (bytedance/Sa2VA ships
# sa2va_qwenvl3/sa2va_qwen3_4b.py only; its README lists Sa2VA-Qwen3-VL-4B),
# so this is the Qwen3-VL-4B recipe (./sa2va_qwen3_vl_4b.py) with the 2B
# checkpoint: the same model class and code path, LoRA r 128 / alpha 256 /
# dropout 0.05, lr 4e-5, batch 1 x accumulate 8, max_length 8192, pixel
# budgets. A choice of this project, not a released setting. Qwen3-VL-2B ties
# lm_head to the input embedding (tie_word_embeddings true), as the 4B.
_base_ = ['./sa2va_qwen3_vl_4b.py']

sa2va_qwen_vl_path = './pretrained/Qwen3-VL-2B-Instruct'
model = dict(mllm=dict(model_path=sa2va_qwen_vl_path))

qwen_vl_text_settings = dict(tokenizer=sa2va_qwen_vl_path)
train_dataloader = dict(dataset=dict(pipeline_overrides=dict(
    EncodeConversation=qwen_vl_text_settings, EncodeLLaVAConversation=qwen_vl_text_settings)))
