# Sa2VA model, tiny: the real code path (InternViT -> pixel shuffle -> mlp1 ->
# Qwen2 LLM with LoRA, [SEG] -> text_hidden_fcs -> SAM2 mask decoder) with
# widths small enough for CPU tests and the demo. Weights are random (seeded);
# nothing is downloaded.
#
# Tokenizer rule: `sa2va_tiny_tokenizer` is a tokenizer directory written by
#   python -c "from projects.sa2va.tokenization import build_tiny_tokenizer as b; b('data/sample/tokenizer')"
# the same directory the datasets' EncodeConversation reads. Sa2VA's tokens
# ([SEG], <p>, </p>, <vp>, </vp>) are added by the model; the LLM grows from
# `sa2va_tiny_vocab` rows to len(tokenizer) once.
#
# SAM2 input size: the tiny SAM2 takes 256 x 256 frames (low-res masks 64 x
# 64); pipelines feeding it use SAM2Input(size=sa2va_tiny_sam2_size).
sa2va_tiny_tokenizer = 'data/sample/tokenizer'
sa2va_tiny_vocab = 1024
sa2va_tiny_sam2_size = 256

sa2va_tiny_internvl = dict(
    vision_config=dict(
        num_channels=3, patch_size=14, image_size=448, qkv_bias=True,
        hidden_size=64, num_attention_heads=4, intermediate_size=256,
        qk_normalization=False, num_hidden_layers=2, use_flash_attn=False,
        hidden_act='gelu', norm_type='layer_norm', layer_norm_eps=1e-6,
        dropout=0.0, drop_path_rate=0.0, attention_dropout=0.0,
        initializer_range=0.02, initializer_factor=0.1),
    llm_config=dict(
        model_type='qwen2', architectures=['Qwen2ForCausalLM'],
        vocab_size=sa2va_tiny_vocab, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        hidden_act='silu', max_position_embeddings=8192, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=False,
        initializer_range=0.02, use_sliding_window=False),
    select_layer=-1, force_image_size=448, downsample_ratio=0.5,
    template='internvl2_5', dynamic_image_size=True, use_thumbnail=True,
    ps_version='v2', min_dynamic_patch=1, max_dynamic_patch=12,
    img_context_token_id=None, architectures=['InternVLChatModel'])

# A SAM2.1-style model (the official yaml structure, small widths).
_tiny_rope = dict(rope_theta=10000.0, feat_sizes=[16, 16], embedding_dim=64,
                  num_heads=1, downsample_rate=1, dropout=0.1)
sa2va_tiny_sam2 = dict(
    image_encoder=dict(
        scalp=1,
        trunk=dict(embed_dim=16, num_heads=2, stages=[1, 2, 4, 2],
                   global_att_blocks=[4, 6],
                   window_pos_embed_bkg_spatial_size=[7, 7],
                   window_spec=[8, 4, 14, 7]),
        neck=dict(position_encoding=dict(num_pos_feats=64, normalize=True,
                                         scale=None, temperature=10000),
                  d_model=64, backbone_channel_list=[128, 64, 32, 16],
                  fpn_top_down_levels=[2, 3], fpn_interp_model='nearest')),
    memory_attention=dict(
        d_model=64, pos_enc_at_input=True, num_layers=2,
        layer=dict(activation='relu', dim_feedforward=128, dropout=0.1,
                   pos_enc_at_attn=False, d_model=64,
                   pos_enc_at_cross_attn_keys=True,
                   pos_enc_at_cross_attn_queries=False,
                   self_attention=_tiny_rope,
                   cross_attention=dict(_tiny_rope, rope_k_repeat=True,
                                        kv_in_dim=16))),
    memory_encoder=dict(
        out_dim=16, in_dim=64,
        position_encoding=dict(num_pos_feats=16, normalize=True, scale=None,
                               temperature=10000),
        mask_downsampler=dict(kernel_size=3, stride=2, padding=1,
                              embed_dim=64),
        fuser=dict(layer=dict(dim=64, kernel_size=7, padding=3,
                              layer_scale_init_value=1e-6, use_dwconv=True),
                   num_layers=2)),
    num_maskmem=7, image_size=sa2va_tiny_sam2_size,
    sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
    use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
    no_obj_embed_spatial=True, use_high_res_features_in_sam=True,
    multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
    use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True,
    proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True,
    only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True,
    pred_obj_scores_mlp=True, fixed_no_obj_ptr=True,
    multimask_output_for_tracking=True, use_multimask_token_for_obj_ptr=True,
    multimask_min_pt_num=0, multimask_max_pt_num=1,
    use_mlp_for_obj_ptr_proj=True, compile_image_encoder=False)

model = dict(
    type='Sa2VAModel',
    tokenizer=sa2va_tiny_tokenizer,
    mllm=dict(
        type='InternVLChat',
        config=sa2va_tiny_internvl,
        torch_dtype='float32',
        freeze_vision=True,
        freeze_llm=True,
        freeze_mlp1=False,
        llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.05)),
    grounding_encoder=dict(
        type='SAM2', config=sa2va_tiny_sam2, checkpoint=None,
        trainable=('sam_mask_decoder', )),
    loss_mask=dict(type='MaskBCELoss', loss_weight=2.0),
    loss_dice=dict(type='MaskDiceLoss', loss_weight=0.5, eps=1.0),
    num_points=1024,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    train_new_token_rows=True,
    train_lm_head=True,
    fix_objects=None,
    data_preprocessor=dict(type='Sa2VADataPreprocessor', dtype='float32'))
