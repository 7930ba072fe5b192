# The owner's mask <-> caption cycle (projects/sa2va/models/cycle.py;
# mask-caption-cycle.md sections 1-3), as the settings of its main run
# ("len256_bs16_topk512_..."): EMA teacher captions of T = 256 tokens,
# corruption 0.25, top-k 512 straight-through Gumbel at tau 0.7 (constant),
# EMA 0.999, LM terms of weight 1 on the pseudo and RefCOCO answers, one
# template draw per batch, padding to the global max over ranks. Owner's v2
# trainables: LoRA, mlp1, text_hidden_fcs, SAM2 mask decoder; embed_tokens
# and lm_head frozen (the Gumbel mix reads the frozen input embedding).
#
# A model base mixes it into its Sa2VA model and states what differs:
#   _base_ = ['./sa2va_tiny.py', './mask_caption_cycle.py']
#   model = dict(_base_.mask_caption_cycle, caption_len=16, topk=32,
#                data_preprocessor=dict(type='MaskCaptionCycleDataPreprocessor'))
mask_caption_cycle = dict(
    type='MaskCaptionCycleModel',
    train_new_token_rows=False,
    train_lm_head=False,
    template='phi3_chat',
    caption_len=256,
    topk=512,
    gumbel_tau=0.7,
    tau_anneal=None,
    topk_chunk=8,
    corrupt_ratio=0.25,
    ema_decay=0.999,
    seg_llm_loss_weight=1.0,
    masked_lm_loss_weight=0.0,
    ref_llm_loss_weight=1.0,
    template_draw='batch',
    caption_vision_grad=True,
    pad_to_global_max=True)
