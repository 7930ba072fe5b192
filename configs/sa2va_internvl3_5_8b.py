# Sa2VA on InternVL3.5-8B (InternViT-300M-448px-V2_5 + Qwen3-8B) + SAM2
# Hiera-L. Needs the current environment (transformers >= 4.51 for Qwen3).
#
# No Sa2VA recipe for InternVL3.5 is published; this takes the InternVL3-8B
# recipe of the newest Sa2VA codebase unchanged (configs/sa2va_internvl3_8b.py:
# qwen_chat, lr 4e-5, batch 2 x accumulate 4, LoRA r 256 / alpha 512, whole
# embedding and lm_head trained, max_length 8192). A choice of this project,
# not a released setting.
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_internvl3_5_8b.py --launcher pytorch
_base_ = ['./sa2va_internvl3_8b.py']

sa2va_internvl_path = './pretrained/InternVL3_5-8B'
model = dict(mllm=dict(model_path=sa2va_internvl_path))

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     max_length=8192)
train_dataloader = dict(dataset=dict(pipeline_defaults=dict(
    EncodeConversation=text_settings,
    EncodeLLaVAConversation=text_settings)))
