# Tiny Sa2VA on an InternVL3.5-shaped backbone: the tiny InternViT + a Qwen3
# LLM (q/k RMSNorm per head, no qkv bias, explicit head_dim; untied lm_head as
# the released InternVL3.5 checkpoints). Needs transformers >= 4.51 (the
# current environment). Used by tests/models/test_internvl3_training.py.
_base_ = ['../../configs/_base_/models/sa2va_tiny.py']

model = dict(mllm=dict(config=dict(llm_config=dict(
    _delete_=True,
    model_type='qwen3', architectures=['Qwen3ForCausalLM'],
    vocab_size={{_base_.sa2va_tiny_vocab}}, hidden_size=64,
    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, attention_bias=False,
    hidden_act='silu', max_position_embeddings=8192, rms_norm_eps=1e-6,
    rope_theta=1000000.0, tie_word_embeddings=False, initializer_range=0.02,
    use_sliding_window=False))))
