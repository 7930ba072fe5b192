# Family 1, visual prompts (mask -> description): the five Osprey-724K files
# and Describe Anything (projects/sa2va/datasets/visual_prompt.py), laid out
# as ./data/osprey-724k/{Osprey-724K/*.json, coco/<split>/} and
# ./data/describe-anything-dataset/describe-anything-dataset/<SUBSET>/
# {annotations.json, images/*.tar}.
#
# Names start with `vp_` (mmengine bases may not share names); the
# tokenizer, chat template and max_length come from the experiment
# (MixedDataset `pipeline_defaults` for EncodeConversation).
vp_data_root = './data/'
# Sa2VA-4B (v1 sa2va_4b.py) takes the five Osprey files once each; Describe
# Anything is the owner fork's addition (not in Sa2VA-4B's mix).
vp_repeats = dict(osprey_conversation=1, osprey_description=1,
                  osprey_short_form=1, osprey_part_level=1, osprey_lvis=1,
                  describe_anything=1)

vp_osprey_root = vp_data_root + 'osprey-724k/'
vp_osprey_image_folders = ['coco/train2014/', 'coco/val2014/',
                           'coco/train2017/', 'coco/val2017/']


vp_encode = dict(type='EncodeConversation')
# Osprey: regions decoded at the annotation size, 'nearest' 16 x 16 grid;
# `ensure_nonempty` gives a region that vanished on the grid its best cell
# (counted), `min_cells=0` keeps every region as Sa2VA v1 does.
vp_osprey_pipeline = [
    dict(type='DecodeMasks', combine='union'),
    dict(type='LoadImage'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='PoolPromptMasks', mode='nearest', ensure_nonempty=True),
    dict(type='AddVisualPromptText'),
    vp_encode,
    dict(type='PackInputs'),
]
vp_osprey_description_pipeline = [
    dict(type='OspreyDescriptionQuestions')] + vp_osprey_pipeline

vp_osprey_common = dict(type='OspreyDataset', data_root=vp_osprey_root,
                        image_folders=vp_osprey_image_folders,
                        pipeline=vp_osprey_pipeline)
vp_osprey_conversation = dict(
    vp_osprey_common, kind='conversation',
    ann_file='Osprey-724K/osprey_conversation.json',
    dataset_name='osprey_conversation')
vp_osprey_description = dict(
    vp_osprey_common, kind='description',
    ann_file='Osprey-724K/osprey_detail_description.json',
    dataset_name='osprey_detail_description',
    pipeline=vp_osprey_description_pipeline)
vp_osprey_short_form = dict(
    vp_osprey_common, kind='short',
    ann_file='Osprey-724K/osprey_short_form.json',
    dataset_name='osprey_short_form')
# v1 reads the part-level file with the plain class (no short-answer suffix)
vp_osprey_part_level = dict(
    vp_osprey_common, kind='conversation',
    ann_file='Osprey-724K/osprey_part_level.json',
    dataset_name='osprey_part_level')
vp_osprey_lvis = dict(
    vp_osprey_common, kind='conversation',
    ann_file='Osprey-724K/osprey_lvis_positive_negative.json',
    dataset_name='osprey_lvis_positive_negative')

# Describe Anything: one tile, 'area' pooling (NEAREST to 448, 16 x 16
# average, > 0.5), one region per sample.
vp_describe_anything = dict(
    type='DescribeAnythingDataset',
    data_root=vp_data_root
    + 'describe-anything-dataset/describe-anything-dataset/',
    subsets=['COCOStuff', 'LVIS', 'PACO', 'SAV'],
    instruction='Please generate a detailed description for the given '
                'image region.',
    index_cache_dir='./work_dirs/cache/dam_index',
    dataset_name='describe_anything',
    pipeline=[
        dict(type='LoadImageFromTar', max_open=8),
        dict(type='DecodeMasks'),
        dict(type='DynamicTiles', enabled=False),
        dict(type='ImagesToTensor'),
        dict(type='PoolPromptMasks', mode='area', ensure_nonempty=True),
        dict(type='AddVisualPromptText'),
        vp_encode,
        dict(type='PackInputs'),
    ])
