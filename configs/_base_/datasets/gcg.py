# Family 4, grounded conversation generation: RefCOCOg-GCG, GranDf,
# Flickr30k-GCG, OpenPSG-GCG (projects/sa2va/datasets/gcg.py), laid out as
# Sa2VA's ./data/glamm_data/ (annotations/*.json, images/...).
#
# Names start with `gcg_` (mmengine bases may not share names); the
# tokenizer, chat template and max_length come from the experiment
# (MixedDataset `pipeline_defaults` for EncodeConversation).
gcg_data_root = './data/glamm_data/'
# Sa2VA-4B (v1 sa2va_4b.py) repeats.
gcg_repeats = dict(refcocog=1, grandf=10, flickr=1, openpsg=1)

gcg_pipeline = [
    dict(type='GCGQuestion'),
    dict(type='LoadImage'),
    dict(type='DecodeMasks', combine='sum'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation'),
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
