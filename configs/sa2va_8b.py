# Sa2VA-8B: InternVL2.5-8B (InternViT-300M + InternLM2.5-7B-chat) + SAM2
# Hiera-L, the recipe and mix of Sa2VA-1B/4B with the internlm2_chat template
# (v1 sa2va_8b.py: same optimiser and batch; checkpoints every 2000
# iterations keeping 2). RefCOCO keeps v1's phi3-style instruction with the
# '<|im_end|>' suffix, as in sa2va_1b.py.
#
# The InternLM2 LLM's code ships in the checkpoint directory
# (modeling_internlm2.py): loading it runs that code (trust_remote_code).
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_8b.py --launcher pytorch
_base_ = ['./sa2va_1b.py']

sa2va_internvl_path = './pretrained/InternVL2_5-8B'
model = dict(mllm=dict(model_path=sa2va_internvl_path,
                       trust_remote_code=True))

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='internlm2_chat',
                     max_length=8192)
train_dataloader = dict(
    dataset=dict(pipeline_defaults=dict(
        EncodeConversation=text_settings,
        EncodeLLaVAConversation=text_settings)),
    # any id inside the vocabulary works (the attention mask comes from the
    # lengths); 0 as v1 (xtuner's pad index). The base's 151643 is Qwen's.
    collate_fn=dict(pad_index=0))

default_hooks = dict(checkpoint=dict(interval=2000))
