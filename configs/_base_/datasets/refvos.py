# Family 3, referring segmentation on video (projects/sa2va/datasets/refvos.py):
# ReVOS, MeViS, Ref-YouTube-VOS and the SA-V pseudo-referring data, laid out
# as Sa2VA's ./data/video_datas/:
#   revos/<video>/<frame>.jpg, meta_expressions_train_.json, mask_dict.json
#   mevis/train/JPEGImages/<video>/<frame>.jpg, meta_expressions.json,
#       mask_dict.json
#   rvos/train/JPEGImages/<video>/<frame>.jpg,
#       meta_expressions/train/meta_expressions.json, mask_dict.pkl
#   sam_v_final_v3.json, sam_v_full/sav_xxx/sav_train/sav_xxx/*.mp4 + *.json
#
# One item per video; per sample 5 objects (with replacement) x 5 frames:
# pixel_values (5, 3, 448, 448) uint8, g_pixel_values (5, 3, 1024, 1024)
# uint8, masks (25, H, W) uint8 object-major (object 0's 5 frames first).
#
# mmengine bases may not share names: every name here starts with `refvos_`.
# The text settings (tokenizer, template, max_length) come from the
# experiment's MixedDataset `pipeline_defaults` (v1: phi3_chat through
# xtuner's template_map_fn + encode_fn).
refvos_data_root = './data/video_datas/'
refvos_sampled_frames = 5
refvos_select_number = 5
# Sa2VA-4B (v1 sa2va_4b.py) lists these datasets with these repeats.
refvos_repeats = dict(revos=10, mevis=4, ref_ytvos=4, sav=4)

refvos_output_steps = [
    dict(type='ImagesToTensor', key='frames'),
    dict(type='SAM2Input', key='frames'),
    dict(type='EncodeConversation'),
    dict(type='PackInputs',
         meta_keys=('record_id', 'sample_idx', 'dataset_name', 'ori_shape',
                    'object_indices', 'frame_indices')),
]
# Folder videos (frames as JPEG files).
refvos_pipeline = [
    dict(type='SampleVideoObjects', select_number=refvos_select_number),
    dict(type='SampleVideoFrames', sampled_frames=refvos_sampled_frames),
    dict(type='LoadFrames'),
    dict(type='DecodeVideoMasks'),
    dict(type='VideoReferringConversation', question_rule='expression'),
] + refvos_output_steps
# SA-V: mp4 at 24 fps, masks on every 4th frame; the header frame count must
# give ceil(frames / 4) == len(masklet).
refvos_sav_pipeline = [
    dict(type='LoadSAVAnnotation', frame_stride=4),
    dict(type='SampleVideoObjects', select_number=refvos_select_number),
    dict(type='SampleVideoFrames', sampled_frames=refvos_sampled_frames),
    dict(type='LoadVideoFrames', frame_stride=4, check_frame_count=True),
    dict(type='DecodeVideoMasks'),
    dict(type='VideoReferringConversation', question_rule='description'),
] + refvos_output_steps

refvos_common = dict(sampled_frames=refvos_sampled_frames,
                     select_number=refvos_select_number,
                     pipeline=refvos_pipeline)
refvos_revos = dict(
    refvos_common, type='ReVOSDataset',
    data_root=refvos_data_root + 'revos/',
    ann_file='meta_expressions_train_.json', mask_file='mask_dict.json',
    data_prefix=dict(img_path=''), dataset_name='revos')
refvos_mevis = dict(
    refvos_common, type='MeViSDataset',
    data_root=refvos_data_root + 'mevis/train/',
    ann_file='meta_expressions.json', mask_file='mask_dict.json',
    data_prefix=dict(img_path='JPEGImages/'), dataset_name='mevis')
refvos_ref_ytvos = dict(
    refvos_common, type='RefYTVOSDataset',
    data_root=refvos_data_root + 'rvos/',
    ann_file='meta_expressions/train/meta_expressions.json',
    mask_file='mask_dict.pkl', data_prefix=dict(img_path='train/JPEGImages/'),
    dataset_name='ref_ytvos')
refvos_sav = dict(
    refvos_common, type='SAVReferringDataset',
    data_root=refvos_data_root, ann_file='sam_v_final_v3.json',
    data_prefix=dict(video_path='sam_v_full/'),
    pipeline=refvos_sav_pipeline, dataset_name='sav_pseudo')
