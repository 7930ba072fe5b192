# Sa2VA-Qwen2.5-VL-7B: Qwen2.5-VL-7B-Instruct + SAM2 Hiera-L on the Sa2VA mix.
# Needs the current environment (.venv-current).
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_qwen2_5_vl_7b.py --launcher pytorch
#
# The 3B recipe with the differences of the newest Sa2VA codebase's
# projects/sa2va/configs/sa2va_qwenvl25/sa2va_qwen25_7b.py (its only changes
# against sa2va_qwen25_3b.py): the checkpoint and batch 1 per GPU ("on 32
# gpus"). LoRA stays r 128 / alpha 256 (the r 256 / alpha 512 in the
# `__main__` demo of models/mllm/qwenvl.py is not a recipe). The 7B lm_head is
# untied (tie_word_embeddings false), so embedding and lm_head train as two
# matrices.
_base_ = ['./sa2va_qwen2_5_vl_3b.py']

sa2va_qwen_vl_path = './pretrained/Qwen2.5-VL-7B-Instruct'  # path = 'Qwen/Qwen2.5-VL-7B-Instruct'
model = dict(mllm=dict(model_path=sa2va_qwen_vl_path))

qwen_vl_text_settings = dict(tokenizer=sa2va_qwen_vl_path)
train_dataloader = dict(
    batch_size=1,                                        # batch_size = 1
    sampler=dict(per_device_batch_size=1 * 8),           # x accumulative_counts = 8
    dataset=dict(pipeline_overrides=dict(EncodeConversation=qwen_vl_text_settings,
                                         EncodeLLaVAConversation=qwen_vl_text_settings)))
