# Family 5, VQA (projects/sa2va/datasets/vqa.py): LLaVA-Instruct 665K
# (images and text-only records) and Chat-UniVi video chat, laid out as
# Sa2VA's ./data/:
#   llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json,
#   llava_data/llava_images/{coco,gqa,ocr_vqa,textvqa,vg}/...
#   video_datas/chat_univi/video_chat.json, Activity_Videos/<video>.mp4|.mkv
#
# LLaVA: pixel_values (n_tiles, 3, 448, 448) uint8 (1..13 tiles), none for a
# text-only record; Chat-UniVi: pixel_values (5, 3, 448, 448) uint8 decoded
# with OpenCV (decord is not installed). No masks, no g_pixel_values.
#
# Names start with `vqa_` (mmengine bases may not share names); the text
# settings (tokenizer, template, max_length) come from the experiment's
# MixedDataset `pipeline_defaults`. v1 encodes LLaVA with its own loop (no separator
# between turns: EncodeLLaVAConversation) and Chat-UniVi with xtuner's
# template_map_fn + encode_fn (EncodeConversation).
vqa_data_root = './data/'
vqa_max_num_tiles = 12
vqa_sampled_frames = 5
# Sa2VA-4B (v1 sa2va_4b.py) repeats.
vqa_repeats = dict(llava=1, chat_univi=1)

vqa_llava_pipeline = [
    dict(type='LoadImage', allow_text_only=True),
    dict(type='DynamicTiles', max_num=vqa_max_num_tiles),
    dict(type='ImagesToTensor'),
    dict(type='EncodeLLaVAConversation'),
    dict(type='PackInputs'),
]
vqa_llava = dict(
    type='LLaVADataset',
    data_root=vqa_data_root + 'llava_data/',
    ann_file='LLaVA-Instruct-150K/llava_v1_5_mix665k.json',
    data_prefix=dict(img_path='llava_images/'),
    max_num_tiles=vqa_max_num_tiles,
    pipeline=vqa_llava_pipeline, dataset_name='llava')

# One random frame in each of 5 equal segments; a missing .mkv falls back to
# the .mp4 of the same name (as v1); jumps of more than 100 frames seek.
vqa_chat_univi_pipeline = [
    dict(type='SampleVideoFrames', sampled_frames=vqa_sampled_frames,
         rule='segments', fallback_exts=('.mp4', )),
    dict(type='LoadVideoFrames', seek_gap=100, fallback_exts=('.mp4', )),
    dict(type='ImagesToTensor', key='frames'),
    dict(type='EncodeConversation'),
    dict(type='PackInputs',
         meta_keys=('record_id', 'sample_idx', 'dataset_name', 'video_path',
                    'frame_indices')),
]
vqa_chat_univi = dict(
    type='ChatUniViDataset',
    data_root=vqa_data_root + 'video_datas/chat_univi/',
    ann_file='video_chat.json',
    data_prefix=dict(video_path='Activity_Videos/'),
    sampled_frames=vqa_sampled_frames, video_token='keep',
    pipeline=vqa_chat_univi_pipeline, dataset_name='chat_univi')
