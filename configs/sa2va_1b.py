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
# internlm2_chat (8B) the SUFFIX '<|im_end|>' closes each answer. Hence no
# `pipeline_overrides` (it would change every dataset's EncodeConversation):
# the three RefCOCO entries of the mix are restated with that template, and
# the other 16 are the base's.
refseg_v1_im_end_template = dict(
    INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
    SUFFIX='<|im_end|>', SUFFIX_AS_EOS=True, SEP='')
refseg_im_end_pipeline = [
    dict(type='SampleReferringObjects', num=5),
    dict(type='LoadImage'),
    dict(type='DecodeMasks', combine='sum'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation', template=refseg_v1_im_end_template),
    dict(type='PackInputs'),
]
refseg_im_end_common = dict(
    type='RefCOCODataset', ann_file='instances.json',
    data_prefix=dict(img_path='coco2014/train2014/'),
    num_classes_per_sample=5, pipeline=refseg_im_end_pipeline)

train_dataloader = dict(dataset=dict(
    pipeline_defaults=dict(EncodeConversation=text_settings,
                           EncodeLLaVAConversation=text_settings),
    datasets=[
        dict(refseg_im_end_common, data_root='./data/ref_seg/refcoco/',
             split_file='refs(unc).p', dataset_name='refcoco'),
        dict(refseg_im_end_common, data_root='./data/ref_seg/refcoco+/',
             split_file='refs(unc).p', dataset_name='refcoco+'),
        dict(refseg_im_end_common, data_root='./data/ref_seg/refcocog/',
             split_file='refs(umd).p', dataset_name='refcocog'),
        {{_base_.vqa_llava}},
        {{_base_.refvos_revos}}, {{_base_.refvos_mevis}},
        {{_base_.refvos_ref_ytvos}}, {{_base_.refvos_sav}},
        {{_base_.vqa_chat_univi}},
        {{_base_.gcg_refcocog}}, {{_base_.gcg_grandf}},
        {{_base_.gcg_flickr}}, {{_base_.gcg_openpsg}},
        {{_base_.vp_osprey_conversation}}, {{_base_.vp_osprey_description}},
        {{_base_.vp_osprey_short_form}}, {{_base_.vp_osprey_part_level}},
        {{_base_.vp_osprey_lvis}}, {{_base_.vp_describe_anything}},
    ]))
