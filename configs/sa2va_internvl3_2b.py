# Sa2VA-InternVL3-2B: InternVL3-2B (InternViT-300M-448px-V2_5 + Qwen2.5-1.5B)
# + SAM2 Hiera-L. Recipe values of the newest Sa2VA codebase,
# projects/sa2va/configs/sa2va_in30_2b.py (magic-research/Sa2VA, the config
# the released Sa2VA-InternVL3-2B was trained with):
# - template 'qwen_chat' (xtuner PROMPT_TEMPLATE.qwen_chat), max_length 8192;
# - AdamW lr 4e-5, weight decay 0.05, clip 1.0, 5% warm-up then cosine, one
#   epoch, bf16 (all inherited from configs/sa2va_4b.py: the same values);
# - batch 2 per GPU x accumulate 8 (its comment: "on 16 gpus");
# - LLM frozen + LoRA r 128 / alpha 256 / dropout 0.05 with
#   modules_to_save=["embed_tokens", "lm_head"] = train_embeddings='all'
#   (inherited); ViT frozen; mlp1, text_hidden_fcs and the SAM2 mask decoder
#   trained; 5 objects per grounding sample (check_obj_number, fix_objects=5);
# - a checkpoint every 2000 iterations, 2 kept; pad id 151643 (inherited).
# Not taken over: its data list (this project's Sa2VA mix is used, see
# configs/_base_/datasets/sa2va_mix.py). The official config.json of
# InternVL3 says template 'internvl2_5' (= qwen_chat here, TEMPLATE_ALIASES).
#
#   python tools/train.py configs/sa2va_internvl3_2b.py
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_internvl3_2b.py --launcher pytorch
_base_ = ['./sa2va_4b.py']

sa2va_internvl_path = './pretrained/InternVL3-2B'
model = dict(mllm=dict(model_path=sa2va_internvl_path,
                       llm_lora=dict(r=128, lora_alpha=256, lora_dropout=0.05)))

accumulative_counts = 8
optim_wrapper = dict(accumulative_counts=accumulative_counts)
# save_steps = 2000, save_total_limit = 2
default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=2))

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     max_length=8192)
train_dataloader = dict(
    batch_size=2,
    sampler=dict(per_device_batch_size=2 * accumulative_counts),
    dataset=dict(
        pipeline_defaults=dict(
            EncodeConversation=text_settings,
            EncodeLLaVAConversation=text_settings),
        # RefCOCO too: the newest codebase's Sa2VA01RefSeg encodes with the
        # config's prompt_template (qwen_chat); refseg.py's own template is
        # Sa2VA v1's phi3-style RefCOCO routine, wrong on a Qwen tokenizer.
        pipeline_overrides=dict(EncodeConversation=dict(template='qwen_chat'))))
