# Family 6, the owner's mask <-> caption data
# (projects/sa2va/datasets/mask_caption/; mask-caption-cycle.md section 8),
# laid out as
#   ./data/mask_caption/sav_npz/**/masklet_data_*.npz     (owner's SA-V pairs)
#   ./data/video_datas/sam_v_full/**/sav_*_manual.json + sav_*.mp4 (SA-V release)
#   ./data/mask_caption/sa1b/{js,img}/                     (SA-1B raw)
#   ./data/mask_caption/openimage_v7/                      (OpenImage v7 CSV + PNGs)
#   ./data/ref_seg/refcoco/                                (RefCOCO captions)
#   ./data/describe-anything-dataset/describe-anything-dataset/<SUBSET>/
#
# Names start with `mc_`. Every sample carries pixel_values{1,2},
# g_pixel_values{1,2}, prompt_masks{1,2}, masks{1,2}, caption, dataset_type,
# has_paired_frame (MaskCaptionOutputs); no text is encoded (captions come
# from the training loop). The 16 x 16 reduction is a per-dataset option of
# MaskCaptionOutputs: `prompt_mode` 'nearest' | 'area' (> 0.5) and
# `ensure_nonempty` (off = the owner's tensors, K = 0 counted as
# prompt_k0_1 / prompt_k0_2 in data_stats; tools/check_data.py prints them).
# For the seed's "option A" route give the mix
# pipeline_overrides=dict(MaskCaptionOutputs=dict(route='option_a')) (samples
# then carry image{1,2} / mask{1,2} / g_pixel_values{1,2}); mc_route below
# is the default written into every pipeline.
mc_data_root = './data/'
mc_route = 'direct'
mc_keys = ('pixel_values1', 'pixel_values2', 'g_pixel_values1',
           'g_pixel_values2', 'prompt_masks1', 'prompt_masks2', 'masks1',
           'masks2', 'image1', 'image2', 'mask1', 'mask2', 'caption',
           'dataset_type', 'has_paired_frame')
mc_pack = dict(type='PackInputs', keys=mc_keys,
               meta_keys=('img_path', 'npz_path', 'record_id', 'sample_idx',
                          'ori_shape', 'dataset_name',
                          'pair_frame_indices'))


def _mc_outputs(interpolation='bilinear', prompt_mode='nearest'):
    return dict(type='MaskCaptionOutputs', route=mc_route,
                interpolation=interpolation, prompt_mode=prompt_mode,
                ensure_nonempty=False)


# SA-V pairs, owner's npz files (frame 2 / mask 2 are the target).
mc_sav_npz = dict(
    type='SAVPairNpzDataset',
    data_root=mc_data_root + 'mask_caption/sav_npz/',
    pattern='masklet_data_*.npz', max_samples=None,
    dataset_name='mc_sav_npz',
    pipeline=[dict(type='LoadNpzPair'), _mc_outputs(), mc_pack])

# SA-V pairs from the official release: one sample per masklet visible in
# >= 2 annotated frames; the pair is drawn per sample (seeded by the dataset
# seed and the index): 'random' = uniform over (t1 < t2) with
# min_gap <= t2 - t1 <= max_gap annotated frames (1 = 4 video frames).
# Frames are decoded from the mp4 (frame 4 t); with extracted frames set
# frames_folder='JPEGImages_24fps' and use LoadFrames instead.
mc_sav_pair_rule = dict(type='SampleSAVFramePair', rule='random', min_gap=1,
                        max_gap=None, min_area=1)
mc_sav_release = dict(
    type='SAVPairReleaseDataset',
    data_root=mc_data_root + 'video_datas/sam_v_full/',
    annotation_types=['manual'], frames_folder=None, min_area=1,
    dataset_name='mc_sav_release',
    pipeline=[
        dict(type='LoadSAVAnnotation', frame_stride=4),
        mc_sav_pair_rule,
        dict(type='LoadVideoFrames', frame_stride=4),
        _mc_outputs(), mc_pack])

# SA-1B raw: one sample per (image, annotation) with area >= min_area; the
# index comes from the JSONs (no image opened) and is a few numpy arrays.
mc_sa1b = dict(
    type='SA1BDataset',
    data_root=mc_data_root + 'mask_caption/sa1b/',
    data_prefix=dict(json='js', img='img'),
    max_images=None, min_area=1,
    dataset_name='mc_sa1b',
    pipeline=[dict(type='LoadSA1BAnnotation'), dict(type='LoadImage'),
              dict(type='DecodeMasks'), _mc_outputs(), mc_pack])

# OpenImage v7: one sample per CSV row (index = byte offsets); files over
# 50 MB, missing or unreadable are skipped and counted.
mc_openimage = dict(
    type='OpenImageSegDataset',
    data_root=mc_data_root + 'mask_caption/openimage_v7/',
    ann_file='train-annotations-object-segmentation.csv',
    data_prefix=dict(img='images/train', mask='masks/train'),
    max_samples=None,
    dataset_name='mc_openimage',
    pipeline=[dict(type='LoadImageAndMaskPNG', max_file_bytes=50 * 1024 * 1024),
              _mc_outputs(), mc_pack])

# RefCOCO captions (GT caption + mask): every expression by default; the
# owner's wrapper: expressions='one_per_image', text_mode='random'.
mc_refcoco_caption = dict(
    type='RefCOCOCaptionDataset',
    data_root=mc_data_root + 'ref_seg/refcoco/',
    ann_file='instances.json', split_file='refs(unc).p',
    data_prefix=dict(img_path='coco2014/train2014/'),
    split='train', expressions='all', text_mode='original',
    dataset_name='mc_refcoco_caption',
    pipeline=[dict(type='LoadImage'), dict(type='DecodeMasks'),
              _mc_outputs(), mc_pack])

# Describe Anything (loop 2): bicubic resize, 'area' grid. The owner's
# --dam_splits also name Mapillary and OpenImages; add them where present.
mc_describe_anything = dict(
    type='DescribeAnythingCaptionDataset',
    data_root=mc_data_root
    + 'describe-anything-dataset/describe-anything-dataset/',
    subsets=['SAV', 'COCOStuff', 'LVIS', 'PACO'],
    index_cache_dir='./work_dirs/cache/dam_index',
    dataset_name='mc_describe_anything',
    pipeline=[dict(type='LoadImageFromTar', max_open=8),
              dict(type='DecodeMasks'),
              _mc_outputs(interpolation='bicubic', prompt_mode='area'),
              mc_pack])

# The owner's loop-1 mix "savALL_sa1b2500_oi200k": all SA-V pairs, the first
# 2,500 SA-1B images (~250 k samples), the first 200,000 OpenImage rows.
# Caps are dataset options (max_samples / max_images), repeats the mix's.
mc_mix_savALL_sa1b2500_oi200k = dict(
    type='MixedDataset',
    datasets=[mc_sav_npz, dict(mc_sa1b, max_images=2500),
              dict(mc_openimage, max_samples=200000)],
    repeats=[1, 1, 1])

# The separate RefCOCO stream interleaved by the cycle's schedule, and the
# Describe Anything stream of the dual loop.
mc_refcoco_stream = mc_refcoco_caption
mc_dam_stream = mc_describe_anything

# ---------------------------------------------------------------------------
# Family 6 in the Sa2VA mix (MaskCaptionToSa2VA): the sources with a
# ground-truth caption train the two loops directly, in Sa2VA's forms, next
# to the other families in one batch:
#   'describe' (loop 1, mask -> caption): region prompt on frame 1, the
#       caption as the answer (the owner's Describe Anything SFT form);
#   'segment' (loop 2, caption -> mask): a Sa2VA v1 referring question
#       about the caption, "[SEG]" answer, frame 2's mask as the GT.
# They take the seed's "option A" route: the worker sends the 1024 image and
# mask (as uint8 bytes: a quarter of the float tensors, normalised on device
# bit-identically); Sa2VADataPreprocessor derives the 448 tile (bilinear)
# and the 16 x 16 grid (nearest) on device. Uncaptioned sources (SA-V pairs, SA-1B,
# OpenImage) have no supervised form: they need the cycle's teacher
# (configs/mask_caption_cycle_*.py) and raise here.
# The mix uses RefCOCO for 'describe' (referring-expression generation; its
# 'segment' form is family 2 already) and Describe Anything for 'segment'
# (its 'describe' form is family 1's vp_describe_anything).
def _mc_sa2va_pipeline(load, tasks):
    return load + [
        dict(type='MaskCaptionOutputs', route='option_a', as_uint8=True),
        dict(type='MaskCaptionToSa2VA', tasks=tasks),
        dict(type='EncodeConversation'),
        dict(type='PackInputs')]


mc_sa2va_refcoco_describe = dict(
    mc_refcoco_caption,
    dataset_name='mc_sa2va_refcoco_describe',
    pipeline=_mc_sa2va_pipeline(
        [dict(type='LoadImage'), dict(type='DecodeMasks')], ['describe']))
mc_sa2va_dam_segment = dict(
    mc_describe_anything,
    dataset_name='mc_sa2va_dam_segment',
    pipeline=_mc_sa2va_pipeline(
        [dict(type='LoadImageFromTar', max_open=8), dict(type='DecodeMasks')],
        ['segment']))
