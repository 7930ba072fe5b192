# Sa2VA-4B: InternVL2.5-4B + SAM2 Hiera-L on the Sa2VA-4B data mix.
#
#   python tools/train.py configs/sa2va_4b.py
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_4b.py --launcher pytorch
#
# Checkpoints under ./pretrained/ and data under ./data/ as in the original
# (docs/datasets.md lays out every dataset; docs/models.md the checkpoints).
_base_ = [
    './_base_/default_runtime.py',
    './_base_/schedules/sa2va_schedule.py',
    './_base_/models/sa2va_4b.py',
    './_base_/datasets/sa2va_mix.py',
]

# Sa2VA v1's recipe exactly (sa2va_1b.py / sa2va_8b.py inherit it):
# - train_embeddings='all': v1 trains the whole input embedding and lm_head,
#   so AdamW's decay, the gradient norm and clipping see every row. The
#   named alternative 'new_rows' trains only the 5 Sa2VA token rows (a peft
#   delta): far fewer trainable weights, the base vocabulary kept as released.
# - fix_objects=5: v1 repeats / samples every grounding sample to 5 objects.
#   The named alternative None keeps each sample's own objects (this model
#   batches ragged counts), so no object is weighted twice or dropped.
model = dict(train_embeddings='all', fix_objects=5)

# Text settings, stated once for every dataset. Sa2VA v1's 4B config
# encodes with xtuner's phi3_chat template.
tokenizer_path = './pretrained/InternVL2_5-4B'
text_settings = dict(tokenizer=tokenizer_path, template='phi3_chat',
                     max_length=8192)
train_dataloader = dict(dataset=dict(pipeline_defaults=dict(
    EncodeConversation=text_settings,
    EncodeLLaVAConversation=text_settings)))
