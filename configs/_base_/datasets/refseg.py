# Family 2, referring segmentation on images: RefCOCO, RefCOCO+, RefCOCOg
# (projects/sa2va/datasets/refseg.py), laid out as Sa2VA's ./data/ref_seg/:
#   ref_seg/<name>/instances.json, refs(unc).p | refs(umd).p,
#   ref_seg/<name>/coco2014/train2014/COCO_train2014_*.jpg
#
# mmengine bases may not share names and cannot read an experiment's
# variables: every name here starts with `refseg_`; the text settings below
# are Sa2VA-4B's. An experiment for another tokenizer / template rebuilds the
# pipeline (docs/datasets.md, "Text settings").
refseg_data_root = './data/ref_seg/'
refseg_tokenizer = './pretrained/InternVL2_5-4B'
refseg_max_length = 8192
# Sa2VA v1 encodes RefCOCO with its own routine: the user turn without the
# newline before <|assistant|>, no separator, no EOS (phi3's <|end|> ends an
# answer). Use the experiment's template name instead to drop this quirk.
refseg_template = dict(
    INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
    SUFFIX='<|end|>', SUFFIX_AS_EOS=True, SEP='')
refseg_num_classes_per_sample = 5

refseg_pipeline = [
    dict(type='SampleReferringObjects', num=refseg_num_classes_per_sample),
    dict(type='LoadImage'),
    dict(type='DecodeMasks', combine='sum'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation', tokenizer=refseg_tokenizer,
         template=refseg_template, max_length=refseg_max_length),
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
