# Family 2, referring segmentation on images: RefCOCO, RefCOCO+, RefCOCOg
# (projects/sa2va/datasets/refseg.py), laid out as Sa2VA's ./data/ref_seg/:
#   ref_seg/<name>/instances.json, refs(unc).p | refs(umd).p,
#   ref_seg/<name>/coco2014/train2014/COCO_train2014_*.jpg
#
# Names start with `refseg_` (mmengine bases may not share names). The
# tokenizer and max_length come from the experiment (MixedDataset
# `pipeline_defaults` for EncodeConversation); the template is this family's
# own: Sa2VA v1 encodes RefCOCO with its own routine, the user turn without
# the newline before <|assistant|>, no separator, no EOS, the chat template's
# suffix closing each answer. The suffix here is phi3_chat's (Sa2VA-4B); a
# model with another template sets its SUFFIX, or replaces the template by
# the experiment's to drop this v1 quirk.
refseg_data_root = './data/ref_seg/'
refseg_template = dict(
    INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
    SUFFIX='<|end|>', SUFFIX_AS_EOS=True, SEP='')
refseg_num_classes_per_sample = 5
# Sa2VA-4B (v1 sa2va_4b.py) lists each of the three datasets four times.
refseg_repeats = dict(refcoco=4, refcoco_plus=4, refcocog=4)

refseg_pipeline = [
    dict(type='SampleReferringObjects', num=refseg_num_classes_per_sample),
    dict(type='LoadImage'),
    dict(type='DecodeMasks', combine='sum'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation', template=refseg_template),
    dict(type='PackInputs'),
]

# The three datasets differ in folder and split file only.
refseg_common = dict(
    type='RefCOCODataset',
    ann_file='instances.json',
    data_prefix=dict(img_path='coco2014/train2014/'),
    num_classes_per_sample=refseg_num_classes_per_sample,
    pipeline=refseg_pipeline)
refseg_refcoco = dict(refseg_common, data_root=refseg_data_root + 'refcoco/',
                      split_file='refs(unc).p', dataset_name='refcoco')
refseg_refcoco_plus = dict(refseg_common,
                           data_root=refseg_data_root + 'refcoco+/',
                           split_file='refs(unc).p', dataset_name='refcoco+')
refseg_refcocog = dict(refseg_common,
                       data_root=refseg_data_root + 'refcocog/',
                       split_file='refs(umd).p', dataset_name='refcocog')
