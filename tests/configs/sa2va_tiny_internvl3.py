# Tiny Sa2VA on an InternVL3-shaped backbone: InternViT (300M family, tiny
# widths) + a Qwen2.5-family LLM (qwen2 classes, as InternVL3-1B/2B/8B/14B),
# template internvl2_5 in config.json (Sa2VA trains InternVL3 with qwen_chat,
# configs/sa2va_internvl3_*.py). Used by tests/models/test_internvl3_training.py.
_base_ = ['../../configs/_base_/models/sa2va_tiny.py']

model = dict(mllm=dict(config=dict(llm_config=dict(
    model_type='qwen2', architectures=['Qwen2ForCausalLM']))))
