# Family 4, grounded conversation generation: RefCOCOg-GCG, GranDf,
# Flickr30k-GCG, OpenPSG-GCG (projects/sa2va/datasets/gcg.py), laid out as
# Sa2VA's ./data/glamm_data/ (annotations/*.json, images/...).
#
# mmengine bases may not share names and cannot read an experiment's
# variables: every name here starts with `gcg_`; the text settings below are
# Sa2VA-4B's (docs/datasets.md, "Text settings").
gcg_data_root = './data/glamm_data/'
gcg_tokenizer = './pretrained/InternVL2_5-4B'
gcg_prompt_template = 'phi3_chat'
gcg_max_length = 8192

gcg_pipeline = [
    dict(type='GCGQuestion'),
    dict(type='LoadImage'),
    dict(type='DecodeMasks', combine='sum'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation', tokenizer=gcg_tokenizer,
         template=gcg_prompt_template, max_length=gcg_max_length),
    dict(type='PackInputs'),
]

gcg_common = dict(type='GCGDataset', data_root=gcg_data_root,
                  pipeline=gcg_pipeline)
gcg_refcocog = dict(
    gcg_common, format='refcocog', dataset_name='gcg_refcocog',
    ann_file='annotations/RefCOCOg_GCG_train.json',
    data_prefix=dict(img_path='images/coco2014/train2014/'))
gcg_grandf = dict(
    gcg_common, format='grandf', dataset_name='gcg_grandf',
    ann_file='annotations/GranDf_HA_GCG_train.json',
    data_prefix=dict(img_path='images/grandf/train/'))
gcg_flickr = dict(
    gcg_common, format='flickr', dataset_name='gcg_flickr',
    ann_file='annotations/flickr_mergedGT_GCG_train.json',
    data_prefix=dict(img_path='images/flickr30k/Flickr30K/'))
gcg_openpsg = dict(
    gcg_common, format='openpsg', dataset_name='gcg_openpsg',
    ann_file='annotations/OpenPsgGCG_train.json',
    data_prefix=dict(img_path='images/coco2017/'))
