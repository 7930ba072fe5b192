# Sa2VA-InternVL3-8B: InternVL3-8B (InternViT-300M-448px-V2_5 + Qwen2.5-7B)
# + SAM2 Hiera-L. Differences of the newest Sa2VA codebase's
# projects/sa2va/configs/sa2va_in30_8b.py from its 2B config (everything else
# as configs/sa2va_internvl3_2b.py): LoRA r 256 / alpha 512, accumulate 4
# (its comment: "on 32 gpus"), batch 2 per GPU.
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_internvl3_8b.py --launcher pytorch
_base_ = ['./sa2va_internvl3_2b.py']

sa2va_internvl_path = './pretrained/InternVL3-8B'
model = dict(mllm=dict(model_path=sa2va_internvl_path,
                       llm_lora=dict(r=256, lora_alpha=512, lora_dropout=0.05)))

accumulative_counts = 4
optim_wrapper = dict(accumulative_counts=accumulative_counts)

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     max_length=8192)
train_dataloader = dict(
    sampler=dict(per_device_batch_size=2 * accumulative_counts),
    dataset=dict(pipeline_defaults=dict(
        EncodeConversation=text_settings,
        EncodeLLaVAConversation=text_settings)))
