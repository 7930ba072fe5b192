# Sa2VA on InternVL3.5-4B (InternViT-300M-448px-V2_5 + Qwen3-4B, untied
# lm_head) + SAM2 Hiera-L. Needs the current environment (transformers >=
# 4.51 for Qwen3; the legacy one refuses with that message).
#
# No Sa2VA recipe for InternVL3.5 is published; this takes the InternVL3-2B
# recipe of the newest Sa2VA codebase unchanged (configs/sa2va_internvl3_2b.py:
# qwen_chat template - InternVL3.5's config.json says 'internvl2_5', the same
# ChatML format -, lr 4e-5, batch 2 x accumulate 8, LoRA r 128 / alpha 256,
# whole embedding and lm_head trained, max_length 8192). A choice of this
# project, not a released setting.
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_internvl3_5_4b.py --launcher pytorch
_base_ = ['./sa2va_internvl3_2b.py']

sa2va_internvl_path = './pretrained/InternVL3_5-4B'
model = dict(mllm=dict(model_path=sa2va_internvl_path))

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     max_length=8192)
train_dataloader = dict(dataset=dict(pipeline_defaults=dict(
    EncodeConversation=text_settings,
    EncodeLLaVAConversation=text_settings)))
