# Your own data (projects/sa2va/datasets/own_data.py; the format and its
# field table: docs/datasets.md, "Fine-tune on your own data"):
#   <own_data_root>/annotations.json   one record per image
#   <own_data_root>/images/...         the pictures
#   <own_data_root>/masks/...          PNG masks (or RLE / polygons inline)
# One dataset per task, all reading the same file; an experiment lists the
# ones it wants (configs/sa2va_4b_finetune_own_data.py). Text settings
# (tokenizer, template, max_length) come from the experiment's
# pipeline_defaults, as for the Sa2VA mix.
own_data_root = './data/my_data/'
own_ann_file = 'annotations.json'

# referring expressions -> [SEG] (as RefCOCO, 5 targets per sample)
own_referring_pipeline = [
    dict(type='LoadMaskFiles'),
    dict(type='SampleReferringObjects', num=5),
    dict(type='LoadImage'),
    dict(type='DecodeMasks'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation'),
    dict(type='PackInputs'),
]
# region descriptions: the region is the visual prompt (as Osprey)
own_region_caption_pipeline = [
    dict(type='OspreyDescriptionQuestions'),
    dict(type='LoadMaskFiles'),
    dict(type='LoadImage'),
    dict(type='DecodeMasks'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='PoolPromptMasks', mode='nearest', ensure_nonempty=True),
    dict(type='AddVisualPromptText'),
    dict(type='EncodeConversation'),
    dict(type='PackInputs'),
]
# a conversation whose answers ground objects with [SEG] (as GCG)
own_conversation_pipeline = [
    dict(type='LoadMaskFiles'),
    dict(type='LoadImage'),
    dict(type='DecodeMasks'),
    dict(type='DynamicTiles', max_num=12),
    dict(type='ImagesToTensor'),
    dict(type='SAM2Input'),
    dict(type='EncodeConversation'),
    dict(type='PackInputs'),
]

own_common = dict(type='OwnDataset', data_root=own_data_root,
                  ann_file=own_ann_file)
own_referring = dict(own_common, task='referring',
                     dataset_name='own_referring',
                     pipeline=own_referring_pipeline)
own_region_caption = dict(own_common, task='region_caption',
                          dataset_name='own_region_caption',
                          pipeline=own_region_caption_pipeline)
own_conversation = dict(own_common, task='conversation',
                        dataset_name='own_conversation',
                        pipeline=own_conversation_pipeline)
