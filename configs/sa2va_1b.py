# Sa2VA-1B: InternVL2.5-1B (InternViT-300M + Qwen2.5-0.5B) + SAM2 Hiera-L,
# the Sa2VA-4B recipe and data mix (v1 sa2va_1b.py: same optimiser, schedule,
# batch, checkpoints every 1000 iterations keeping 2) with the qwen_chat
# template.
#
#   python tools/train.py configs/sa2va_1b.py
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_1b.py --launcher pytorch
_base_ = ['./sa2va_4b.py']

sa2va_internvl_path = './pretrained/InternVL2_5-1B'
model = dict(mllm=dict(model_path=sa2va_internvl_path))

tokenizer_path = sa2va_internvl_path
text_settings = dict(tokenizer=tokenizer_path, template='qwen_chat',
                     max_length=8192)

# RefCOCO / + / g. Sa2VA v1 does not give these the experiment's template:
# its ReferSegmDataset (arch 'intern_vl', every size) replaces the template's
# INSTRUCTION by the phi3-style '<|user|>\n{input}<|end|><|assistant|>\n' and
# keeps the rest of the experiment's template, i.e. for qwen_chat (1B) and
# internlm2_chat (8B) the SUFFIX '<|im_end|>' closes each answer.
refseg_v1_im_end_template = dict(
    INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
    SUFFIX='<|im_end|>', SUFFIX_AS_EOS=True, SEP='')
refseg_im_end = dict(EncodeConversation=dict(
    template=refseg_v1_im_end_template))

train_dataloader = dict(dataset=dict(
    pipeline_defaults=dict(EncodeConversation=text_settings,
                           EncodeLLaVAConversation=text_settings),
    dataset_pipeline_overrides={
        'refcoco': refseg_im_end, 'refcoco+': refseg_im_end,
        'refcocog': refseg_im_end}))
