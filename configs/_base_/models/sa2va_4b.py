# Sa2VA-4B: InternVL2.5-4B (InternViT-300M + Qwen2.5-3B) + SAM2 Hiera-L.
#
# Checkpoints (see docs): ./pretrained/InternVL2_5-4B (an InternVL checkpoint
# directory: config.json, model*.safetensors, tokenizer files) and
# ./pretrained/sam2_hiera_large.pt (the official {'model': state_dict} file;
# for SAM2.1 use config='sam2.1_hiera_l' with sam2.1_hiera_large.pt).
# The tokenizer is read from the InternVL directory (tokenizer=None); the model
# adds [SEG], <p>, </p>, <vp>, </vp> and grows the LLM embeddings once.
#
# Trainable (Sa2VA-4B): LLM frozen + LoRA r128 / alpha 256 / dropout 0.05 on
# every attention and MLP linear, embedding rows of the new tokens, the whole
# lm_head; ViT frozen; mlp1 trained; SAM2 frozen except its mask decoder;
# text_hidden_fcs trained. Checkpoints hold only these (save_trainable_only).
sa2va_internvl_path = './pretrained/InternVL2_5-4B'
sa2va_sam2_checkpoint = './pretrained/sam2_hiera_large.pt'

model = dict(
    type='Sa2VAModel',
    tokenizer=None,
    mllm=dict(
        type='InternVLChat',
        model_path=sa2va_internvl_path,
        torch_dtype='bfloat16',
        freeze_vision=True,
        freeze_llm=True,
        freeze_mlp1=False,
        llm_lora=dict(r=128, lora_alpha=256, lora_dropout=0.05),
        gradient_checkpointing=True),
    grounding_encoder=dict(
        type='SAM2', config='sam2_hiera_l', checkpoint=sa2va_sam2_checkpoint,
        trainable=('sam_mask_decoder', )),
    loss_mask=dict(type='MaskBCELoss', loss_weight=2.0),
    loss_dice=dict(type='MaskDiceLoss', loss_weight=0.5, eps=1.0),
    llm_loss_weight=1.0,
    num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    train_new_token_rows=True,
    train_lm_head=True,
    # Sa2VA v1 fixes 5 objects per sample (repeat / random subset) because its
    # SAM2 batch needs equal counts; this model batches ragged counts, so the
    # default keeps every object. Set 5 to reproduce Sa2VA exactly.
    fix_objects=None,
    pretrained_pth=None,
    data_preprocessor=dict(type='Sa2VADataPreprocessor', dtype='bfloat16',
                           sam2_dtype='float32'))
