"""Video on the Qwen-VL backbones: QwenVLVideoInput's two layouts against
transformers' own processors, the spliced forward against the official
forward (images and video), and a referring-VOS sample training a step."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from projects.sa2va.transforms.qwen_vl import QWEN_VL_PRESETS
from projects.sa2va.transforms.qwen_vl_video import (QwenVLVideoInput, qwen3_timestamps,
                                                     video_token_text)

BACKBONES = ('qwen2_5_vl', 'qwen3_vl')
QWEN_TOKENS = ['<|vision_start|>', '<|vision_end|>', '<|image_pad|>', '<|video_pad|>']


def _frames(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                          dtype=torch.uint8).numpy()) for _ in range(n)]


def _tf(name):
    import transformers
    cls = getattr(transformers, name, None)
    if cls is None:
        pytest.skip(f'{name} is not in transformers {transformers.__version__}')
    return cls


def _video_processor(backbone, min_px, max_px, n):
    """transformers' video processor of the backbone with our preset; Qwen3-VL
    bounds the whole clip, so its budget is the per-frame one times n."""
    c = QWEN_VL_PRESETS[backbone]
    scale = n if backbone == 'qwen3_vl' else 1
    cls = _tf('Qwen3VLVideoProcessor' if backbone == 'qwen3_vl' else 'Qwen2VLVideoProcessor')
    return cls(patch_size=c['patch_size'], image_mean=list(c['mean']), image_std=list(c['std']),
               size={'shortest_edge': min_px * scale, 'longest_edge': max_px * scale},
               do_sample_frames=False, cap_pixels_per_frame=False)


# ------------------------------------------------------------ layouts
@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('n', [5, 4])
def test_temporal_pairs_equal_the_video_processor(backbone, n):
    """Frames at a size the rule keeps (no resampling on either side):
    patches within 1e-5, grids equal; an odd count repeats the last frame."""
    f = 2 * QWEN_VL_PRESETS[backbone]['patch_size']
    frames = _frames(n, 3 * f, 4 * f, seed=n)
    step = QwenVLVideoInput(backbone, 'temporal_pairs', min_pixels=f * f,
                            max_pixels=16 * f * f, fps=2.0)
    out = step.transform({'frames': frames})
    ref = _video_processor(backbone, f * f, 16 * f * f, n)(videos=[frames], return_tensors='pt')
    assert out['video_grid_thw'].tolist() == ref['video_grid_thw'].tolist() \
        == [[(n + 1) // 2, 6, 8]]
    torch.testing.assert_close(out['pixel_values_videos'], ref['pixel_values_videos'].float(),
                               atol=1e-5, rtol=0)
    assert out['num_video_tokens'] == (n + 1) // 2 * 12
    if n % 2:  # the padded slice of the last group is the last frame
        last = out['pixel_values_videos'][-12 * 4:].reshape(48, 3, 2, -1)
        assert torch.equal(last[:, :, 0], last[:, :, 1])


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('size', [(90, 130), (500, 260), (20, 60)])
def test_resized_grids_equal_the_processors(backbone, size):
    """Unaligned frame sizes: one size per video, the grids the processors
    give (frames: the image processor per frame; pairs: the video one)."""
    n = 3
    frames = _frames(n, *size)
    lo, hi = 8 * 28 * 28, 32 * 28 * 28
    pairs = QwenVLVideoInput(backbone, 'temporal_pairs', min_pixels=lo, max_pixels=hi,
                             fps=1.0).transform({'frames': list(frames)})
    ref = _video_processor(backbone, lo, hi, n)(videos=[frames], return_tensors='pt')
    assert pairs['video_grid_thw'].tolist() == ref['video_grid_thw'].tolist()
    c = QWEN_VL_PRESETS[backbone]
    img = _tf('Qwen2VLImageProcessor')(patch_size=c['patch_size'], min_pixels=lo, max_pixels=hi)
    per_frame = QwenVLVideoInput(backbone, min_pixels=lo, max_pixels=hi).transform(
        {'frames': list(frames)})
    assert per_frame['image_grid_thw'].tolist() == img(images=frames, return_tensors='pt')[
        'image_grid_thw'].tolist()


@pytest.mark.parametrize('backbone', BACKBONES)
def test_frames_mode_equals_the_image_processor_per_frame(backbone):
    """The official Sa2VA-Qwen rule: each frame through the image processor
    (min / max pixels 128 / 512 x 28 x 28); an odd count; one block per
    frame."""
    c = QWEN_VL_PRESETS[backbone]
    f = 2 * c['patch_size']
    frames = _frames(5, 12 * f, 14 * f, seed=3)  # within [128, 512] x 784 px
    out = QwenVLVideoInput(backbone).transform({'frames': frames})
    ref = _tf('Qwen2VLImageProcessor')(
        patch_size=c['patch_size'], image_mean=list(c['mean']), image_std=list(c['std']),
        min_pixels=128 * 28 * 28, max_pixels=512 * 28 * 28)(images=frames, return_tensors='pt')
    assert out['image_grid_thw'].tolist() == ref['image_grid_thw'].tolist() == [[1, 24, 28]] * 5
    torch.testing.assert_close(out['pixel_values'], ref['pixel_values'].float(), atol=1e-5, rtol=0)
    assert out['num_frames'] == 5 and out['num_frame_tokens'] == 12 * 14
    assert 'pixel_values_videos' not in out and 'video_token_text' not in out


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('mode', ['frames', 'temporal_pairs'])
def test_uint8_patches_normalised_on_device_are_the_float_ones(backbone, mode):
    """as_uint8: the bytes leave the worker; Sa2VADataPreprocessor(
    qwen_vl_stats=backbone) gives the float step's patches bit for bit."""
    from projects.sa2va.models.data_preprocessor import Sa2VADataPreprocessor
    frames = _frames(3, 70, 90, seed=11)
    key = 'pixel_values' if mode == 'frames' else 'pixel_values_videos'
    outs = [QwenVLVideoInput(backbone, mode, fps=1.0, as_uint8=u).transform(
        {'frames': list(frames)}) for u in (False, True)]
    assert outs[0][key].dtype == torch.float32 and outs[1][key].dtype == torch.uint8
    data = Sa2VADataPreprocessor(qwen_vl_stats=backbone)({key: outs[1][key]})
    assert torch.equal(data[key], outs[0][key])


def _qwen_tokenizer():
    from projects.sa2va.tokenization import build_tiny_tokenizer
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({'additional_special_tokens': QWEN_TOKENS})
    return tok


def _through_processor(backbone, text, frames, idx, total, fps):
    """The backbone's processor (tiny tokenizer with Qwen's tokens) and our
    temporal-pairs step on the same frames and video metadata."""
    proc_cls = _tf('Qwen3VLProcessor' if backbone == 'qwen3_vl' else 'Qwen2_5_VLProcessor')
    from transformers.video_utils import VideoMetadata
    f = 2 * QWEN_VL_PRESETS[backbone]['patch_size']
    proc = proc_cls(image_processor=_tf('Qwen2VLImageProcessor')(patch_size=f // 2),
                    tokenizer=_qwen_tokenizer(),
                    video_processor=_video_processor(backbone, f * f, 16 * f * f, len(frames)))
    ref = proc(text=[text], videos=[frames], return_tensors='pt', video_metadata=[
        VideoMetadata(total_num_frames=total, fps=fps, frames_indices=idx)])
    out = QwenVLVideoInput(backbone, 'temporal_pairs', min_pixels=f * f, max_pixels=16 * f * f,
                           fps=fps).transform(
        {'frames': frames, 'frame_indices': idx, 'num_video_frames': total})
    return proc.tokenizer.decode(ref['input_ids'][0]), ref, out


def test_qwen3_timestamps_equal_the_processor_text():
    """Qwen3VLProcessor's video text: `<s seconds>` + one block per temporal
    group; ours is the same string."""
    idx = [0, 7, 15, 22, 30]
    text, _, out = _through_processor('qwen3_vl', 'hi <|vision_start|><|video_pad|><|vision_end|> ok',
                                      _frames(5, 96, 128, seed=4), idx, 40, 6.0)
    assert text == 'hi ' + out['video_token_text'] + ' ok'
    assert out['video_token_text'].startswith('<0.6 seconds><|vision_start|>')
    # the documented rule: (i_a + i_b) / 2 / fps per pair, the last index repeated
    assert qwen3_timestamps(idx, 6.0) == pytest.approx([7 / 12, 37 / 12, 30 / 6])
    assert 'second_per_grid_ts' not in out


def test_qwen2_5_seconds_per_grid_equal_the_processor():
    """second_per_grid_ts = 2 / (T / total * fps), one block of video tokens."""
    text, ref, out = _through_processor('qwen2_5_vl', '<|vision_start|><|video_pad|><|vision_end|>',
                                        _frames(4, 56, 84, seed=5), [0, 10, 20, 30], 40, 6.0)
    torch.testing.assert_close(out['second_per_grid_ts'],
                               torch.tensor(ref['second_per_grid_ts'], dtype=torch.float32))
    assert float(out['second_per_grid_ts']) == pytest.approx(2 / (4 / 40 * 6.0))
    assert text == out['video_token_text'] == video_token_text(2, 6)


def test_video_step_errors_and_text_only():
    step = QwenVLVideoInput('qwen2_5_vl', 'temporal_pairs')
    with pytest.raises(ValueError, match='needs fps'):
        step.transform({'frames': _frames(2, 56, 56)})
    assert step.transform({'text_only': True}) == {'text_only': True}
    with pytest.raises(ValueError, match='video_mode'):
        QwenVLVideoInput('qwen2_5_vl', 'pairs')
    from projects.sa2va.transforms import RecordError
    with pytest.raises(RecordError, match='differ in size'):
        QwenVLVideoInput('qwen3_vl').transform({'frames': _frames(1, 64, 64)
                                                + _frames(1, 64, 96)})


# ------------------------------------------------------------ the model
def _need(model_type):
    import transformers
    from projects.sa2va.models.qwen_vl import QWEN_VL_CLASSES
    if not hasattr(transformers, QWEN_VL_CLASSES[model_type]):
        pytest.skip(f'{QWEN_VL_CLASSES[model_type]} is not in transformers '
                    f'{transformers.__version__} (Qwen-VL needs the current stack)')


@pytest.fixture(scope='module')
def qwen_tok():
    from projects.sa2va.tokenization import add_special_tokens
    tok = _qwen_tokenizer()
    add_special_tokens(tok)
    return tok


def _chat(model_type, tok):
    from projects.sa2va.models.qwen_vl import QwenVLChat, tiny_qwen_vl_config
    torch.manual_seed(0)
    return QwenVLChat(config=tiny_qwen_vl_config(model_type, len(tok)), tokenizer=tok).eval()


def _step(model_type, mode, **kw):
    f = 2 * QWEN_VL_PRESETS[model_type]['patch_size']
    return QwenVLVideoInput(model_type, mode, min_pixels=f * f, max_pixels=6 * f * f, **kw)


def _official_logits(chat, ids, **vision):
    """``*ForConditionalGeneration.forward`` with the processor's modality
    ids (image pad 1, video pad 2), no visual prompts."""
    types = (ids == chat.image_token_id).int() + 2 * (ids == chat.video_token_id).int()
    with torch.no_grad():
        return chat.hf_model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             mm_token_type_ids=types, **vision).logits


@pytest.mark.parametrize('model_type', BACKBONES)
def test_spliced_forward_equals_the_official_forward(model_type, qwen_tok):
    """Images (two sizes), 'frames' video (5 image blocks), native video
    (odd count; Qwen3-VL timestamps) and image + video in one sequence: our
    forward's logits equal transformers' own forward within 1e-5."""
    _need(model_type)
    chat = _chat(model_type, qwen_tok)
    enc = lambda text: torch.tensor([qwen_tok.encode(text, add_special_tokens=False)])  # noqa
    start, pad, end = qwen_tok.convert_ids_to_tokens(
        [chat.vision_start_id, chat.image_token_id, chat.vision_end_id])
    frames = _frames(5, 70, 100, seed=7)
    per_frame = _step(model_type, 'frames').transform({'frames': list(frames)})
    pairs = _step(model_type, 'temporal_pairs', fps=2.0).transform(
        {'frames': list(frames), 'frame_indices': [0, 2, 4, 6, 8], 'num_video_frames': 10})
    a = _step(model_type, 'frames').transform({'frames': _frames(1, 90, 130, seed=8)})
    b = _step(model_type, 'frames').transform({'frames': _frames(1, 60, 60, seed=9)})
    img = lambda out: start + pad * out['num_frame_tokens'] + end  # noqa
    video = dict(pixel_values_videos=pairs['pixel_values_videos'],
                 video_grid_thw=pairs['video_grid_thw'])
    if model_type == 'qwen2_5_vl':
        video['second_per_grid_ts'] = pairs['second_per_grid_ts']
        assert float(pairs['second_per_grid_ts']) == pytest.approx(2 / (5 / 10 * 2.0))
    images = dict(pixel_values=torch.cat([a['pixel_values'], b['pixel_values']]),
                  image_grid_thw=torch.cat([a['image_grid_thw'], b['image_grid_thw']]))
    cases = {
        'images': (f'the {img(a)} red {img(b)} ball', images),
        'frames': ('the video\n' + '\n'.join([img(per_frame)] * 5) + ' is here',
                   dict(pixel_values=per_frame['pixel_values'],
                        image_grid_thw=per_frame['image_grid_thw'])),
        'video': (f'a {pairs["video_token_text"]} red ball', video),
        'both': (f'a {img(a)} and {pairs["video_token_text"]} ball',
                 dict(pixel_values=a['pixel_values'], image_grid_thw=a['image_grid_thw'],
                      **video)),
    }
    for name, (text, vision) in cases.items():
        ids = enc(text)
        ref = _official_logits(chat, ids, **vision)
        with torch.no_grad():
            ours = chat(ids, attention_mask=torch.ones_like(ids), **vision)
        torch.testing.assert_close(ours.logits, ref, atol=1e-5, rtol=1e-5, msg=name)
        assert not torch.equal(ours.logits, _official_logits(chat, ids)), name  # vision matters
    # 'frames': one block per frame, positions from get_rope_index over the 5 images
    ids = enc(cases['frames'][0])
    inputs = chat.build_inputs(ids, attention_mask=torch.ones_like(ids), **cases['frames'][1])
    assert int((ids == chat.image_token_id).sum()) == 5 * per_frame['num_frame_tokens']
    ref_pos, _ = chat.hf_model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == chat.image_token_id).int(),
        image_grid_thw=per_frame['image_grid_thw'])
    assert torch.equal(inputs['position_ids'], ref_pos)
    first = int((ids[0] == chat.image_token_id).nonzero()[0])
    assert inputs['position_ids'][0, 0, first] == first  # a frame's time index: its start


@pytest.mark.parametrize('model_type', BACKBONES)
def test_video_token_count_mismatch_raises(model_type, qwen_tok):
    _need(model_type)
    chat = _chat(model_type, qwen_tok)
    out = _step(model_type, 'temporal_pairs', fps=1.0).transform({'frames': _frames(2, 64, 64)})
    text = out['video_token_text'].replace('<|video_pad|>', '', 1)
    ids = torch.tensor([qwen_tok.encode(text, add_special_tokens=False)])
    with pytest.raises(ValueError, match='video_pad'):
        chat.build_inputs(ids, pixel_values_videos=out['pixel_values_videos'],
                          video_grid_thw=out['video_grid_thw'])
    with pytest.raises(ValueError, match='without video_grid_thw'):
        chat.build_inputs(ids, pixel_values_videos=out['pixel_values_videos'])
    with pytest.raises(ValueError, match='no pixel_values_videos'):  # never text embeddings
        chat.build_inputs(ids)


@pytest.mark.parametrize('model_type', BACKBONES)
def test_generation_with_video_matches_the_forward(model_type, qwen_tok):
    """Cached greedy generation from a native-video prompt: the tokens are
    the forward's argmax over prompt + answer (video rope and deepstack in
    the prompt pass, new tokens after the largest position)."""
    _need(model_type)
    chat = _chat(model_type, qwen_tok)
    out = _step(model_type, 'temporal_pairs', fps=2.0).transform({'frames': _frames(3, 64, 96)})
    kw = {k: out[k] for k in ('pixel_values_videos', 'video_grid_thw', 'second_per_grid_ts')
          if k in out}
    prompt = torch.tensor([qwen_tok.encode('the ' + out['video_token_text'] + ' ball is',
                                           add_special_tokens=False)])
    gen = chat.generate(prompt, max_new_tokens=4, **kw)
    new = gen.sequences[0]
    full = torch.cat([prompt[0], new[:-1]])[None]
    with torch.no_grad():
        ref = chat(full, attention_mask=torch.ones_like(full), **kw)
    n = prompt.shape[1]
    assert ref.logits[0, n - 1:].argmax(-1).tolist() == new.tolist()
    torch.testing.assert_close(gen.hidden_states[-1][0][0, -1], ref.hidden_states[0][0, -1],
                               atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------ a real sample
@pytest.fixture(scope='module')
def refvos_root(tmp_path_factory):
    from projects.sa2va.sample_data import make_sample_data
    out = tmp_path_factory.mktemp('refvos_qwen')
    make_sample_data(out, families=['refvos'])
    return out / 'video_datas'


@pytest.fixture(scope='module')
def qwen_tok_dir(tmp_path_factory):
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('qwen_vl_tok')
    build_tiny_tokenizer(path, image_tokens='qwen_vl')
    return path


def _refvos_samples(root, tok_dir, model_type, mode, as_uint8=False):
    """Two MeViS samples (5 objects x 5 frames) of the refvos base config,
    its pipeline swapped for the backbone (``qwen_vl_pipeline_swaps``:
    ``ImagesToTensor(key='frames')`` -> ``QwenVLVideoInput``), the Qwen text
    settings as pipeline defaults."""
    import projects.sa2va.datasets  # noqa: F401  (registers the families)
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults, swap_pipeline_steps
    from projects.sa2va.registry import DATASETS
    from projects.sa2va.transforms.qwen_vl import qwen_vl_pipeline_swaps
    from tests.datasets.family_utils import base_config
    f = 2 * QWEN_VL_PRESETS[model_type]['patch_size']
    cfg = dict(base_config('refvos').refvos_mevis.to_dict(), data_root=str(root / 'mevis/train'))
    swaps = qwen_vl_pipeline_swaps(model_type, as_uint8=as_uint8, video=dict(
        video_mode=mode, min_pixels=f * f, max_pixels=9 * f * f, fps=6.0))
    cfg = apply_pipeline_defaults(swap_pipeline_steps(cfg, swaps), dict(
        EncodeConversation=dict(tokenizer=str(tok_dir), template='qwen_chat',
                                image_tokens='qwen_vl'),
        SAM2Input=dict(size=256)))
    assert [st['type'] for st in cfg['pipeline']].count('QwenVLVideoInput') == 1
    ds = DATASETS.build(cfg)
    return [ds[0], ds[1]]


@pytest.mark.parametrize('mode', ['frames', 'temporal_pairs'])
@pytest.mark.parametrize('model_type', BACKBONES)
def test_refvos_sample_trains_a_step(model_type, mode, refvos_root, qwen_tok_dir):
    """LoadFrames -> QwenVLVideoInput -> SAM2Input -> EncodeConversation ->
    PackInputs -> sa2va_qwen_vl_collate_fn -> the tiny Qwen Sa2VA model: the
    text has the video's tokens, SAM2 gets the 5 frames of each sample, the
    losses are finite and a step moves the trainable weights."""
    _need(model_type)
    from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
    from tests.models.test_qwen_vl import _build
    model = _build(model_type, qwen_tok_dir)
    # native video as uint8 patches (the swap's as_uint8 reaches the video
    # step; the data preprocessor normalises them)
    as_uint8 = mode == 'temporal_pairs'
    samples = _refvos_samples(refvos_root, qwen_tok_dir, model_type, mode, as_uint8)
    batch = sa2va_qwen_vl_collate_fn(samples)
    pixels = batch['pixel_values' if mode == 'frames' else 'pixel_values_videos']
    assert pixels.dtype == (torch.uint8 if as_uint8 else torch.float32)
    chat = model.mllm
    ids = batch['input_ids']
    assert batch['frames_per_batch'] == [5, 5]
    assert [m.shape[0] for m in batch['masks']] == [25, 25]  # 5 objects x 5 frames
    if mode == 'frames':
        grid = batch['image_grid_thw']
        assert grid.shape == (10, 3) and (grid[:, 0] == 1).all()
        per_frame = int(grid[0, 1:].prod()) // 4
        assert ((ids == chat.image_token_id).sum(1) == 5 * per_frame).all()
        assert ((ids == chat.vision_start_id).sum(1) == 5).all()
        assert 'pixel_values_videos' not in batch
    else:
        grid = batch['video_grid_thw']
        assert grid.shape == (2, 3) and grid[:, 0].tolist() == [3, 3]  # 5 frames -> 3 pairs
        assert ((ids == chat.video_token_id).sum(1) == grid.prod(-1) // 4).all()
        assert not (ids == chat.image_token_id).any() and 'pixel_values' not in batch
        assert ('second_per_grid_ts' in batch) == (model_type == 'qwen2_5_vl')
    seen = []
    sam2_images = model._sam2_images
    model._sam2_images = lambda g: seen.append(sam2_images(g)) or seen[-1]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    assert all(torch.isfinite(v) and float(v) > 0 for v in losses.values()), losses
    assert seen and seen[0].shape == (10, 3, 256, 256)  # SAM2: the 5 frames of each
    total, _ = model.parse_losses(losses)
    opt.zero_grad(set_to_none=True)
    total.backward()
    merger = [p for n, p in model.named_parameters() if '.merger.' in n and p.requires_grad]
    assert merger and all(p.grad is not None and p.grad.abs().sum() > 0 for p in merger)
    opt.step()
    moved = {n for n, p in model.named_parameters()
             if n in before and not torch.equal(before[n], p.detach())}
    for group in ('lora_B', 'merger', 'text_hidden_fcs', 'sam_mask_decoder'):
        assert any(group in n for n in moved), group


def test_collate_video_keys_and_their_errors():
    from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
    ids = dict(input_ids=torch.tensor([1, 2, 3]), labels=torch.tensor([-100, 2, 3]))
    out = QwenVLVideoInput('qwen2_5_vl', 'temporal_pairs', min_pixels=28 * 28,
                           max_pixels=4 * 28 * 28, fps=2.0).transform({'frames': _frames(3, 56, 56)})
    video = {k: out[k] for k in ('pixel_values_videos', 'video_grid_thw', 'second_per_grid_ts')}
    batch = sa2va_qwen_vl_collate_fn([dict(ids, **video), dict(ids), dict(ids, **video)])
    assert batch['video_grid_thw'].tolist() == [[2, 4, 4]] * 2
    assert batch['pixel_values_videos'].shape == (64, 3 * 2 * 14 * 14)
    assert batch['second_per_grid_ts'].tolist() == [1.0, 1.0]
    assert 'pixel_values' not in batch
    bad = dict(video, pixel_values_videos=video['pixel_values_videos'][:-4])
    with pytest.raises(ValueError, match='sample 1: pixel_values_videos'):
        sa2va_qwen_vl_collate_fn([dict(ids, **video), dict(ids, **bad)])
    no_sec = {k: v for k, v in video.items() if k != 'second_per_grid_ts'}
    with pytest.raises(ValueError, match='some videos'):
        sa2va_qwen_vl_collate_fn([dict(ids, **video), dict(ids, **no_sec)])
