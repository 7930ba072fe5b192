"""Fuzz test: malformed inputs of all six families, generated from the
sample data, each answered by a named error or a skipped-and-counted
record (never an unclear crash, a segfault, a hang or a silent sample).

Machinery and classes: ``tests/datasets/fuzz_utils.py``. Every case runs
in a forked child (so a SIGSEGV from pycocotools or a hang is detected);
two at a time. The clean baseline of each dataset must give only samples.
"""
from __future__ import annotations

from collections import Counter

import pytest

from tests.datasets import fuzz_utils as fz
from tests.datasets.family_utils import base_config

NAN, INF = float('nan'), float('inf')

# dataset key -> (family, base config)
DATASETS = {
    'vp_osprey_conversation': ('visual_prompt', 'visual_prompt'),
    'vp_osprey_description': ('visual_prompt', 'visual_prompt'),
    'vp_describe_anything': ('visual_prompt', 'visual_prompt'),
    'refseg_refcoco': ('refseg', 'refseg'),
    'refseg_refcocog': ('refseg', 'refseg'),
    'refvos_mevis': ('refvos', 'refvos'),
    'refvos_revos': ('refvos', 'refvos'),
    'refvos_ref_ytvos': ('refvos', 'refvos'),
    'refvos_sav': ('refvos', 'refvos'),
    'gcg_grandf': ('gcg', 'gcg'),
    'gcg_refcocog': ('gcg', 'gcg'),
    'gcg_flickr': ('gcg', 'gcg'),
    'vqa_llava': ('vqa', 'vqa'),
    'vqa_chat_univi': ('vqa', 'vqa'),
    'mc_sa1b': ('mask_caption', 'mask_caption'),
    'mc_sav_npz': ('mask_caption', 'mask_caption'),
    'mc_sav_release': ('mask_caption', 'mask_caption'),
    'mc_openimage': ('mask_caption', 'mask_caption'),
    'mc_refcoco_caption': ('mask_caption', 'mask_caption'),
    'mc_describe_anything': ('mask_caption', 'mask_caption'),
}

OSPREY = 'osprey-724k/Osprey-724K/osprey_conversation.json'
OSPREY_DESC = 'osprey-724k/Osprey-724K/osprey_detail_description.json'
DAM = 'describe-anything-dataset/describe-anything-dataset/COCOStuff/' \
      'annotations.json'
REFCOCO = 'ref_seg/refcoco/'
REFCOCOG = 'ref_seg/refcocog/'
MEVIS = 'video_datas/mevis/train/'
REVOS = 'video_datas/revos/'
RVOS = 'video_datas/rvos/'
SAV = 'video_datas/sam_v_final_v3.json'
GRANDF = 'glamm_data/annotations/GranDf_HA_GCG_train.json'
GCG_REFCOCOG = 'glamm_data/annotations/RefCOCOg_GCG_train.json'
FLICKR = 'glamm_data/annotations/flickr_mergedGT_GCG_train.json'
LLAVA = 'llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json'
CHAT = 'video_datas/chat_univi/video_chat.json'
OPENIMAGE_CSV = 'mask_caption/openimage_v7/' \
    'train-annotations-object-segmentation.csv'

#: special-token strings and undecodable text put into data text
BAD_TEXTS = {'seg': 'the [SEG] dog', 'ctx': 'a <IMG_CONTEXT> cat',
             'img': 'an <img> tag', 'endimg': 'an </img> tag',
             'vp': 'a <vp> box', 'p': 'a <p> phrase', 'run': 'x<IMG_CONTEXT*4>',
             'chatml': 'stop<|im_end|> here', 'surrogate': 'bad \ud800 text'}
#: a few of them, for the datasets where the text path is shared
SOME_BAD_TEXTS = {k: BAD_TEXTS[k] for k in ('seg', 'vp', 'surrogate')}
#: what survives RefCOCO's lower-casing (``[seg]`` is plain text: the added
#: tokens are case-sensitive, tested in test_bad_data.py)
LOWER_BAD_TEXTS = {k: BAD_TEXTS[k] for k in ('img', 'endimg', 'vp', 'p',
                                             'chatml', 'surrogate')}
#: strings that survive Osprey's deletion of every '<' and '>'
OSPREY_BAD_TEXTS = {'seg': 'the [SEG] region', 'surrogate': 'x \udc80 y'}
#: bad polygon coordinates (pycocotools: NaN segfaults, huge values hang)
BAD_COORDS = {'nan': NAN, 'inf': INF, 'neg_inf': -INF, 'huge': 1e300,
              'far': 1e9, 'string': 'abc', 'none': None, 'nan_str': 'nan'}
#: cases that may crash or hang a process run in a forked child
RISKY = ('polygon', 'bomb', 'huge', 'malicious', 'size', 'rle', 'far',
         'pickle', 'tar', 'npz', 'video', 'float')
FILE_BREAKS = {'zero': fz.zero, 'truncated': fz.truncate,
               'garbage': fz.garbage}
JSON_BREAKS = dict(FILE_BREAKS, not_utf8=fz.not_utf8,
                   wrong_top=fz.json_text('42'))
IMAGE_BREAKS = dict(FILE_BREAKS, bomb=fz.bomb_image,
                    transposed=fz.pil_edit(fz.transpose_image),
                    resized=fz.pil_edit(fz.resize_image),
                    float_mode=fz.pil_edit(fz.float_image))


def _set(path, value):
    """A JSON edit setting ``obj[p0][p1]... = value``."""
    def fn(obj):
        cur = obj
        for p in path[:-1]:
            cur = cur[p]
        cur[path[-1]] = value
    return fn


def _poly_coord(path_to_seg, value):
    """Set the second coordinate of the first polygon."""
    def fn(obj):
        cur = obj
        for p in path_to_seg:
            cur = cur[p]
        cur[0][1] = value
    return fn


def _each(key, fn):
    """Apply ``fn`` to every element of ``obj[key]`` (a COCO list)."""
    def edit(obj):
        for e in obj[key]:
            fn(e)
    return edit


def _all_polygons(value):
    return _each('annotations', lambda a: a['segmentation'][0].__setitem__(
        1, value) if isinstance(a['segmentation'], list) else None)


def _first_dict_value(fn):
    def edit(obj):
        fn(obj[next(iter(obj))])
    return edit


def _refs(fn):
    """Pickle edit applied to every train ref."""
    def edit(refs):
        for r in refs:
            if r['split'] == 'train':
                fn(r)
    return edit


def _mevis_exp(value):
    def edit(obj):
        vid = next(iter(obj['videos']))
        for e in obj['videos'][vid]['expressions'].values():
            e['exp'] = value
    return edit


def _rle_garbage(obj):
    for v in obj.values():
        for k in range(len(v)):
            if v[k] is not None:
                v[k]['counts'] = '!!!!' + str(v[k]['counts'])[4:]


def _rle_size(obj):
    for v in obj.values():
        for e in v:
            if e is not None:
                e['size'] = [e['size'][1], e['size'][0]]


def build_cases() -> list:
    C = []

    def add(name, dataset, files, **kw):
        risky = any(w in name for w in RISKY) or any(
            f.endswith(('.p', '.pkl')) for f in files)
        C.append(fz.Case(f'{DATASETS[dataset][0]}/{dataset}/{name}',
                         DATASETS[dataset][0], dataset, files, risky=risky,
                         **kw))

    for ds in DATASETS:
        add('clean', ds, {}, clean=True)
    # -- family 1: Osprey, Describe Anything ---------------------------------
    for k, m in JSON_BREAKS.items():
        add(f'file_{k}', 'vp_osprey_conversation', {OSPREY: m})
        add(f'file_{k}', 'vp_describe_anything', {DAM: m})
    for k, v in BAD_COORDS.items():
        add(f'polygon_{k}', 'vp_osprey_conversation', {OSPREY: fz.json_edit(
            _poly_coord([0, 'annotation', 0, 'segmentation'], v))})
    for k, v in {'height_str': 'x', 'height_neg': -5, 'height_huge': 10 ** 9,
                 'height_nan': NAN, 'swapped': None, 'other_size': 100}.items():
        if k == 'swapped':
            def fn(obj):
                obj[0]['height'], obj[0]['width'] = obj[0]['width'], \
                    obj[0]['height']
            add(f'size_{k}', 'vp_osprey_conversation',
                {OSPREY: fz.json_edit(fn)})
        else:
            add(f'size_{k}', 'vp_osprey_conversation',
                {OSPREY: fz.json_edit(_set([0, 'height'], v))})
    for k, v in {'segmentation_int': 5, 'segmentation_empty': [],
                 'annotation_empty': None, 'rle_garbage': {
                     'size': [120, 160], 'counts': '!!!garbage'},
                 'rle_wrong_size': {'size': [12, 16], 'counts': '`1'}}.items():
        path = [0, 'annotation'] if k == 'annotation_empty' else \
            [0, 'annotation', 0, 'segmentation']
        add(k, 'vp_osprey_conversation', {OSPREY: fz.json_edit(
            _set(path, [] if v is None else v))})
    for k, t in OSPREY_BAD_TEXTS.items():
        add(f'text_{k}', 'vp_osprey_conversation', {OSPREY: fz.json_edit(
            _set([0, 'conversations', 1, 'value'], t))})
        add(f'text_{k}', 'vp_osprey_description', {OSPREY_DESC: fz.json_edit(
            _set([0, 'description', 0], t))})
    add('turn_value_int', 'vp_osprey_conversation', {OSPREY: fz.json_edit(
        _set([0, 'conversations', 1, 'value'], 7))})
    add('first_turn_gpt', 'vp_osprey_conversation', {OSPREY: fz.json_edit(
        _set([0, 'conversations', 0, 'from'], 'gpt'))})
    add('no_file_name', 'vp_osprey_conversation', {OSPREY: fz.json_edit(
        lambda o: o[0].pop('file_name'))})
    add('description_count', 'vp_osprey_description', {
        OSPREY_DESC: fz.json_edit(lambda o: o[0]['description'].pop())})
    for k, m in IMAGE_BREAKS.items():
        add(f'image_{k}', 'vp_osprey_conversation', {'@img0': m})
    for k, t in SOME_BAD_TEXTS.items():
        add(f'caption_{k}', 'vp_describe_anything', {DAM: fz.json_edit(
            _first_dict_value(lambda v: v[0].__setitem__('caption', t)))})
    for k, v in {'size_str': ['a', 'b'], 'counts_garbage': None,
                 'counts_int': 5}.items():
        def fn(region, k=k, v=v):
            if k == 'size_str':
                region['mask_rle']['size'] = v
            elif k == 'counts_garbage':
                region['mask_rle']['counts'] = '!!' + region['mask_rle'][
                    'counts'][2:]
            else:
                region['mask_rle']['counts'] = v
        add(f'rle_{k}', 'vp_describe_anything', {DAM: fz.json_edit(
            _first_dict_value(lambda v, fn=fn: fn(v[0])))})
    add('region_not_dict', 'vp_describe_anything', {DAM: fz.json_edit(
        _first_dict_value(lambda v: v.__setitem__(0, 'oops')))})
    add('tar_cut', 'vp_describe_anything', {'@tar0': fz.cut_tar})
    add('tar_zero', 'vp_describe_anything', {'@tar0': fz.zero})
    add('tar_garbage', 'vp_describe_anything', {'@tar0': fz.garbage})
    # -- family 2: RefCOCO ----------------------------------------------------
    for k, m in FILE_BREAKS.items():
        add(f'refs_{k}', 'refseg_refcoco', {REFCOCO + 'refs(unc).p': m})
        add(f'refs_{k}', 'refseg_refcocog', {REFCOCOG + 'refs(umd).p': m})
    for k, m in JSON_BREAKS.items():
        add(f'instances_{k}', 'refseg_refcoco',
            {REFCOCO + 'instances.json': m})
    ds, refs, inst = 'refseg_refcoco', REFCOCO + 'refs(unc).p', \
        REFCOCO + 'instances.json'
    add('refs_malicious', ds, {refs: fz.malicious_pickle(
        '/tmp/sa2va_fuzz_marker_refs')})
    add('refs_malicious_nested', ds, {refs: fz.malicious_pickle(
        '/tmp/sa2va_fuzz_marker_refs2',
        lambda obj, p: obj[0].__setitem__('file_name', p) or obj)})
    add('refs_not_list', ds, {refs: fz.pickle_edit(lambda o: {'refs': o})})
    for k, fn in {'no_sentences': lambda r: r.pop('sentences'),
                  'raw_none': lambda r: r['sentences'][0].__setitem__(
                      'raw', None),
                  'no_ann': lambda r: r.__setitem__('ann_id', -1),
                  'no_image': lambda r: r.__setitem__('image_id', -1),
                  'ann_list': lambda r: r.__setitem__('ann_id', [1]),
                  'empty_sentences': lambda r: r.__setitem__('sentences',
                                                             [])}.items():
        add(f'ref_{k}', ds, {refs: fz.pickle_edit(_refs(fn))})
    for k, t in dict(LOWER_BAD_TEXTS, empty='', dot='.', blank='   '
                     ).items():
        add(f'sentence_{k}', ds, {refs: fz.pickle_edit(_refs(
            lambda r, t=t: [s.__setitem__('raw', t)
                            for s in r['sentences']]))})
    for k, v in BAD_COORDS.items():
        add(f'polygon_{k}', ds, {inst: fz.json_edit(_all_polygons(v))})
    add('segmentation_int', ds, {inst: fz.json_edit(_each(
        'annotations', lambda a: a.__setitem__('segmentation', 5)))})
    add('segmentation_missing', ds, {inst: fz.json_edit(_each(
        'annotations', lambda a: a.pop('segmentation')))})
    add('ann_no_id', ds, {inst: fz.json_edit(_each(
        'annotations', lambda a: a.pop('id')))})
    for k, fn in {'height_str': lambda im: im.__setitem__('height', 'x'),
                  'size_swapped': lambda im: im.update(
                      height=im['width'], width=im['height']),
                  'size_other': lambda im: im.update(height=im['height'] + 7),
                  'size_huge': lambda im: im.update(height=10 ** 9),
                  'file_name_int': lambda im: im.__setitem__('file_name', 7),
                  }.items():
        add(f'image_entry_{k}', ds, {inst: fz.json_edit(_each('images', fn))})
    for k, m in IMAGE_BREAKS.items():
        add(f'image_{k}', ds, {'@img0': m})
    # -- family 3: video --------------------------------------------------------
    for k, m in JSON_BREAKS.items():
        add(f'meta_{k}', 'refvos_mevis', {MEVIS + 'meta_expressions.json': m})
    for k, m in FILE_BREAKS.items():
        add(f'masks_{k}', 'refvos_revos', {REVOS + 'mask_dict.json': m})
    for k, t in dict(SOME_BAD_TEXTS, empty='', dot='.').items():
        add(f'exp_{k}', 'refvos_revos', {
            REVOS + 'meta_expressions_train_.json':
            fz.json_edit(_mevis_exp(t))})
    add('rle_garbage', 'refvos_mevis', {MEVIS + 'mask_dict.json':
                                        fz.json_edit(_rle_garbage)})
    add('rle_size_swapped', 'refvos_revos', {REVOS + 'mask_dict.json':
                                             fz.json_edit(_rle_size)})
    ds, meta = 'refvos_mevis', MEVIS + 'meta_expressions.json'
    for k, fn in {
            'frames_str': lambda e: e.__setitem__('frames', '00000'),
            'frames_int': lambda e: e.__setitem__('frames', [0, 1]),
            'anno_id_int': lambda e: [x.__setitem__('anno_id', 5) for x in
                                      e['expressions'].values()],
            'anno_id_unknown': lambda e: [x.__setitem__('anno_id', [99999])
                                          for x in e['expressions'].values()],
            'exp_int': lambda e: [x.__setitem__('exp', 3) for x in
                                  e['expressions'].values()],
            'no_frames': lambda e: e.pop('frames')}.items():
        add(k, ds, {meta: fz.json_edit(lambda o, fn=fn: fn(
            next(iter(o['videos'].values()))))})
    add('masks_short', ds, {MEVIS + 'mask_dict.json': fz.json_edit(
        lambda o: [v.pop() for v in o.values()])})
    add('masks_entry_int', ds, {MEVIS + 'mask_dict.json': fz.json_edit(
        lambda o: [v.__setitem__(0, 5) for v in o.values()])})
    for k, m in dict(FILE_BREAKS, bomb=fz.bomb_image).items():
        add(f'frames_{k}', ds, {'@frames0': fz.for_each_file(m)})
    ds, pkl = 'refvos_ref_ytvos', RVOS + 'mask_dict.pkl'
    for k, m in FILE_BREAKS.items():
        add(f'pickle_{k}', ds, {pkl: m})
    add('pickle_malicious', ds, {pkl: fz.malicious_pickle(
        '/tmp/sa2va_fuzz_marker_pkl')})
    add('pickle_malicious_nested', ds, {pkl: fz.malicious_pickle(
        '/tmp/sa2va_fuzz_marker_pkl2',
        lambda obj, p: obj.__setitem__('0', [p] + obj['0'][1:]) or obj)})
    add('pickle_not_dict', ds, {pkl: fz.pickle_edit(lambda o: [o])})
    add('pickle_counts_garbage', ds, {pkl: fz.pickle_edit(
        lambda o: [e.__setitem__('counts', b'!!!!') for v in o.values()
                   for e in v if e is not None])})
    add('meta_zero', ds, {RVOS + 'meta_expressions/train/meta_expressions.json':
                          fz.zero})
    ds = 'refvos_sav'
    for k, m in JSON_BREAKS.items():
        add(f'index_{k}', ds, {SAV: m})
    for k, t in SOME_BAD_TEXTS.items():
        add(f'formated_{k}', ds, {SAV: fz.json_edit(_first_dict_value(
            lambda v, t=t: v['objects']['0'].__setitem__('formated', t)))})
    add('object_key_str', ds, {SAV: fz.json_edit(_first_dict_value(
        lambda v: v['objects'].__setitem__('x', v['objects']['0'])))})
    add('short_caps_int', ds, {SAV: fz.json_edit(_first_dict_value(
        lambda v: v['objects']['0'].__setitem__('short_caps', 5)))})
    for k, m in FILE_BREAKS.items():
        add(f'masklet_{k}', ds, {'@anno0': m})
    add('masklet_count_inf', ds, {'@anno0': fz.json_edit(
        _set(['video_frame_count'], INF))})
    add('masklet_short', ds, {'@anno0': fz.json_edit(
        lambda o: o['masklet'].pop())})
    add('video_garbage', ds, {'@video0': fz.garbage})
    add('video_zero', ds, {'@video0': fz.zero})
    # -- family 4: GCG ---------------------------------------------------------
    for k, m in JSON_BREAKS.items():
        add(f'file_{k}', 'gcg_grandf', {GRANDF: m})
    for ds, f in (('gcg_refcocog', GCG_REFCOCOG), ('gcg_flickr', FLICKR)):
        for k in ('zero', 'truncated'):
            add(f'file_{k}', ds, {f: JSON_BREAKS[k]})
    ds = 'gcg_grandf'
    for k, t in SOME_BAD_TEXTS.items():
        add(f'caption_{k}', ds, {GRANDF: fz.json_edit(
            _set([0, 'caption'], t + ' ' * 40))})

    def grounding(fn):
        def edit(obj):
            fn(next(iter(obj[0]['groundings'].values())))
        return edit
    for k, fn in {'span_out': lambda g: g.__setitem__('token_positives',
                                                       [5, 500]),
                  'span_str': lambda g: g.__setitem__('token_positives',
                                                       ['a', 'b']),
                  'span_nan': lambda g: g.__setitem__('token_positives',
                                                       [NAN, 3]),
                  'span_short': lambda g: g.__setitem__('token_positives',
                                                         [1]),
                  'rle_garbage': lambda g: g['rle_masks'][0].__setitem__(
                      'counts', '!!!'),
                  'rle_size': lambda g: g['rle_masks'][0].__setitem__(
                      'size', [7, 9]),
                  'no_masks': lambda g: g.pop('rle_masks')}.items():
        add(f'grounding_{k}', ds, {GRANDF: fz.json_edit(grounding(fn))})
    add('size_swapped', ds, {GRANDF: fz.json_edit(lambda o: o[0].update(
        height=o[0]['width'], width=o[0]['height']))})
    for k, m in IMAGE_BREAKS.items():
        add(f'image_{k}', ds, {'@img0': m})
    ds = 'gcg_refcocog'
    for k, v in BAD_COORDS.items():
        add(f'polygon_{k}', ds, {GCG_REFCOCOG: fz.json_edit(
            lambda o, v=v: next(iter(o[0].values()))['refs'][0][
                'segmentation'][0].__setitem__(1, v))})
    add('record_two_keys', ds, {GCG_REFCOCOG: fz.json_edit(
        lambda o: o[0].update(extra={}))})
    for k, fn in {'sizes_nan': lambda im: im.__setitem__('height', NAN),
                  'caption_int': lambda im: im.__setitem__('caption', 5)
                  }.items():
        add(k, 'gcg_flickr', {FLICKR: fz.json_edit(_each('images', fn))})
    add('tokens_positive_bad', 'gcg_flickr', {FLICKR: fz.json_edit(_each(
        'annotations', lambda a: a.__setitem__('tokens_positive', 5)))})
    # -- family 5: VQA ---------------------------------------------------------
    ds = 'vqa_llava'
    for k, m in JSON_BREAKS.items():
        add(f'file_{k}', ds, {LLAVA: m})
    for k, t in BAD_TEXTS.items():
        add(f'answer_{k}', ds, {LLAVA: fz.json_edit(
            _set([0, 'conversations', 1, 'value'], t))})
    add('question_img', ds, {LLAVA: fz.json_edit(
        _set([0, 'conversations', 0, 'value'], '<image>\nwhat is <img>?'))})
    add('two_image_placeholders', ds, {LLAVA: fz.json_edit(
        _set([0, 'conversations', 1, 'value'], 'see <image>'))})
    add('role_bad', ds, {LLAVA: fz.json_edit(
        _set([0, 'conversations', 0, 'from'], 'system'))})
    add('value_none', ds, {LLAVA: fz.json_edit(
        _set([0, 'conversations', 0, 'value'], None))})
    add('image_int', ds, {LLAVA: fz.json_edit(_set([0, 'image'], 12))})
    add('conversations_missing', ds, {LLAVA: fz.json_edit(
        lambda o: o[0].pop('conversations'))})
    for k, m in dict(FILE_BREAKS, bomb=fz.bomb_image,
                     float_mode=fz.pil_edit(fz.float_image)).items():
        add(f'image_{k}', ds, {'@img0': m})
    ds = 'vqa_chat_univi'
    for k in ('zero', 'truncated', 'not_utf8'):
        add(f'file_{k}', ds, {CHAT: JSON_BREAKS[k]})
    for k, t in SOME_BAD_TEXTS.items():
        add(f'answer_{k}', ds, {CHAT: fz.json_edit(
            _set([0, 'conversations', 1, 'value'], t))})
    add('unequal_turns', ds, {CHAT: fz.json_edit(
        lambda o: o[0]['conversations'].pop())})
    add('video_garbage', ds, {'@video0': fz.garbage})
    # -- family 6: mask <-> caption (public classes) -----------------------
    for k, m in JSON_BREAKS.items():
        add(f'sa1b_json_{k}', 'mc_sa1b', {'@json0': m})
    add('sa1b_rle_garbage', 'mc_sa1b', {'@json0': fz.json_edit(_each(
        'annotations', lambda a: a['segmentation'].__setitem__('counts',
                                                               '!!!')))})
    add('sa1b_size_swapped', 'mc_sa1b', {'@json0': fz.json_edit(
        lambda o: o['image'].update(height=o['image']['width'],
                                    width=o['image']['height']))})
    for k, m in IMAGE_BREAKS.items():
        add(f'sa1b_image_{k}', 'mc_sa1b', {'@img0': m})
    for k, m in FILE_BREAKS.items():
        add(f'npz_{k}', 'mc_sav_npz', {'@npz0': m})
    for k, m in JSON_BREAKS.items():
        add(f'release_{k}', 'mc_sav_release', {'@anno0': m})
    add('release_rle_garbage', 'mc_sav_release', {'@anno0': fz.json_edit(
        lambda o: [r.__setitem__('counts', '!!!') for fr in o['masklet']
                   for r in fr])})
    for k in ('zero', 'garbage'):
        add(f'csv_{k}', 'mc_openimage', {OPENIMAGE_CSV: FILE_BREAKS[k]})
    def short_row(text):
        lines = text.split('\n')
        lines[1] = lines[1].split(',', 1)[1]
        return '\n'.join(lines)
    add('csv_short_row', 'mc_openimage', {OPENIMAGE_CSV:
                                          fz.text_edit(short_row)})
    for k, m in dict(FILE_BREAKS, bomb=fz.bomb_image).items():
        add(f'mask_png_{k}', 'mc_openimage', {'@mask0': m})
        add(f'image_{k}', 'mc_openimage', {'@img0': m})
    add('refs_malicious', 'mc_refcoco_caption', {
        REFCOCO + 'refs(unc).p': fz.malicious_pickle(
            '/tmp/sa2va_fuzz_marker_mc')})
    for k in ('img', 'surrogate'):
        add(f'sentence_{k}', 'mc_refcoco_caption', {
            REFCOCO + 'refs(unc).p': fz.pickle_edit(_refs(
                lambda r, t=BAD_TEXTS[k]: [s.__setitem__('raw', t)
                                           for s in r['sentences']]))})
    for k, v in (('nan', NAN), ('huge', 1e300)):
        add(f'polygon_{k}', 'mc_refcoco_caption', {
            REFCOCO + 'instances.json': fz.json_edit(_all_polygons(v))})
    add('caption_seg', 'mc_describe_anything', {DAM: fz.json_edit(
        _first_dict_value(lambda v: v[0].__setitem__('caption', 'a [SEG]')))})
    add('tar_cut', 'mc_describe_anything', {'@tar0': fz.cut_tar})
    return C


CASES = build_cases()


def _targets(cfgs, template, tokenizer) -> dict:
    """``'@...'`` placeholders of each dataset: files of its record 0."""
    import os.path as osp
    out = {}
    for name, cfg in cfgs.items():
        ds = fz.build(cfg, template, tokenizer)
        ds.full_init()
        info = ds.get_data_info(0)
        rel = {}
        for key, ph in (('img_path', '@img0'), ('tar_path', '@tar0'),
                        ('video_dir', '@frames0'), ('video_path', '@video0'),
                        ('anno_path', '@anno0'), ('json_path', '@json0'),
                        ('npz_path', '@npz0'), ('mask_path', '@mask0')):
            if info.get(key):
                rel[ph] = osp.relpath(info[key], template)
        out[name] = rel
    return out


@pytest.fixture(scope='module')
def template(sample_cwd):
    """The session's sample data (every family); cases link to it and
    copy only the files they break."""
    return sample_cwd / 'data' / 'sample'


def test_enough_cases_all_families():
    fams = Counter(c.family for c in CASES if not c.clean)
    assert sum(fams.values()) >= 150, fams
    assert set(fams) == {'visual_prompt', 'refseg', 'refvos', 'gcg', 'vqa',
                         'mask_caption'}, fams
    assert len({c.name for c in CASES}) == len(CASES)


def test_fuzz_malformed_inputs(template, tiny_tokenizer, tmp_path, capsys):
    import os
    markers = [f'/tmp/sa2va_fuzz_marker_{s}' for s in
               ('refs', 'refs2', 'pkl', 'pkl2', 'mc')]
    for m in markers:
        if os.path.exists(m):
            os.remove(m)
    cfgs = {}
    for name, (_, base) in DATASETS.items():
        cfgs[name] = base_config(base)[name].to_dict() \
            if hasattr(base_config(base)[name], 'to_dict') \
            else dict(base_config(base)[name])
    targets = _targets(cfgs, template, tiny_tokenizer)
    cases = [c for c in CASES
             if all(not k.startswith('@') or k in targets[c.dataset]
                    for k in c.files)]
    missing = sorted(c.name for c in CASES if c not in cases)
    assert not missing, f'placeholders without a target: {missing}'
    fz.run_cases(cases, cfgs, template, tmp_path, tiny_tokenizer, targets)
    counts = Counter(c.result['class'] for c in cases)
    by_family = Counter((c.family, c.result['class']) for c in cases)
    with capsys.disabled():
        print(f'\nfuzz: {len(cases)} cases: {dict(counts)}')
        for fam in sorted({c.family for c in cases}):
            print(f'  {fam}: ' + ', '.join(
                f'{k}={v}' for (f, k), v in sorted(by_family.items())
                if f == fam))
    for m in markers:
        assert not os.path.exists(m), f'a data pickle ran code: {m}'
    bad = [(c.name, c.result) for c in cases
           if c.result['class'] not in (fz.GOOD + ('clean',))
           or (c.clean and c.result['class'] != 'clean')]
    assert not bad, '\n'.join(f'{n}: {r}' for n, r in bad)
    assert counts['named_error'] + counts['skipped_counted'] >= 150
