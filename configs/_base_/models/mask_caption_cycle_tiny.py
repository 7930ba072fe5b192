# Mask <-> caption cycle model, tiny (projects/sa2va/models/cycle.py): the
# tiny Sa2VA (configs/_base_/models/sa2va_tiny.py) trained by loop 1 + the
# RefCOCO stream. Owner's v2 trainables: LoRA, mlp1, text_hidden_fcs, SAM2
# mask decoder; embed_tokens and lm_head frozen (the Gumbel mix reads the
# frozen input embedding). Small T / k keep a CPU step short.
_base_ = ['./sa2va_tiny.py']

model = dict(
    type='MaskCaptionCycleModel',
    train_new_token_rows=False,
    train_lm_head=False,
    template='phi3_chat',
    caption_len=16,
    topk=32,
    gumbel_tau=0.7,
    tau_anneal=None,
    topk_chunk=8,
    corrupt_ratio=0.25,
    ema_decay=0.999,
    seg_llm_loss_weight=1.0,
    ref_llm_loss_weight=1.0,
    template_draw='batch',
    caption_vision_grad=True,
    pad_to_global_max=True,
    data_preprocessor=dict(type='MaskCaptionCycleDataPreprocessor',
                           dtype='float32'))
