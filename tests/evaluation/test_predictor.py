"""Sa2VAPredictor on the tiny model: images, videos (SAM2 memory path),
regions, GCG parsing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projects.sa2va.constants import IMG_CONTEXT_TOKEN
from projects.sa2va.evaluation.predictor import Sa2VAPredictor, parse_gcg
from projects.sa2va.transforms.functional import dynamic_tiles
from projects.sa2va.transforms.video import sample_frame_indices

from .helpers import build_tiny_model, forced, random_image, seg_plan


@pytest.fixture(scope='module')
def predictor(tmp_path_factory):
    from projects.sa2va.tokenization import build_tiny_tokenizer
    tok_dir = tmp_path_factory.mktemp('tok')
    build_tiny_tokenizer(tok_dir)
    return Sa2VAPredictor(build_tiny_model(tok_dir), template='phi3_chat',
                          max_num_tiles=2)


def test_segment_gives_one_mask_per_seg_at_the_original_size(predictor):
    plan = seg_plan(predictor)
    out = predictor.segment(random_image(40, 60, 0), 'Please segment the cat.',
                            max_new_tokens=10, **forced(plan))
    assert out['sequences'].tolist() == plan
    assert out['text'] == 'the cat[SEG]the cat[SEG]'
    assert out['masks'].shape == (2, 40, 60) and out['masks'].dtype == torch.bool
    up = F.interpolate(out['logits'][:, None], size=(40, 60), mode='bilinear',
                       align_corners=False)[:, 0]
    assert torch.equal(out['masks'], up > 0)
    # prompt made by the datasets' transforms: 256 context tokens per tile
    # (1 tile for 40 x 60 with max 2), phi3's assistant prefix last
    tok = predictor.tokenizer
    enc = predictor._image_inputs(random_image(40, 60, 0), 'x')['input_ids'][0]
    ctx = tok.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    n_tiles = len(dynamic_tiles(random_image(40, 60, 0), max_num=2))
    assert n_tiles == 1
    assert int((enc == ctx).sum()) == 256 * n_tiles
    assert tok.decode(enc[-4:]).endswith('<|assistant|>\n')


def test_gcg_pairs_and_parse():
    assert parse_gcg('<p> a man </p> [SEG] with <p>a dog</p>[SEG].') == \
        ['a man', 'a dog']
    with pytest.raises(ValueError, match='pairs'):
        parse_gcg('<p> a man </p> [SEG] and [SEG]')


def test_video_propagation_keeps_key_frames_and_tracks_the_rest(predictor):
    frames = [random_image(30, 40, i) for i in range(8)]
    keys = sample_frame_indices(8, 5, np.random.default_rng(0), 'segments')
    assert predictor.key_frames(8) == sorted(set(keys))
    plan = seg_plan(predictor)
    out = predictor.segment_video(frames, 'Please segment the cat.',
                                  max_new_tokens=10, **forced(plan))
    assert out['masks'].shape == (2, 8, 30, 40)
    assert out['key_masks'].shape == (2, len(out['key_frames']), 30, 40)
    # conditioning frames: SAM2's track_step with the [SEG] prompt and no
    # memory gives exactly the training path's language-prompted masks
    for i, t in enumerate(out['key_frames']):
        assert torch.equal(out['masks'][:, t], out['key_masks'][:, i])


def test_video_tracks_backwards_before_the_first_key_frame(predictor, monkeypatch):
    frames = [random_image(24, 24, i) for i in range(5)]
    monkeypatch.setattr(predictor, 'key_frames', lambda n: [2, 3])
    calls = []
    sam2 = predictor.model.grounding_encoder
    original = sam2.track_step

    def spy(t, cond, *args, **kwargs):
        calls.append((t, cond, kwargs.get('track_in_reverse', False)))
        return original(t, cond, *args, **kwargs)

    monkeypatch.setattr(sam2, 'track_step', spy)
    out = predictor.segment_video(frames, 'segment it', max_new_tokens=6,
                                  **forced(seg_plan(predictor, n_seg=1)))
    assert out['masks'].shape == (1, 5, 24, 24)
    assert calls == [(2, True, False), (3, True, False), (4, False, False),
                     (1, False, True), (0, False, True)]


def test_describe_uses_region_prompt(predictor, monkeypatch):
    image = random_image(32, 48, 3)
    mask = np.zeros((32, 48), np.uint8)
    mask[4:20, 8:30] = 1
    seen = {}
    original = predictor.model.generate_masks

    def spy(input_ids, *args, **kwargs):
        seen['ids'] = input_ids
        seen['prompt_masks'] = kwargs['prompt_masks']
        return original(input_ids, *args, **kwargs)

    monkeypatch.setattr(predictor.model, 'generate_masks', spy)
    words = predictor.tokenizer.encode('a red box', add_special_tokens=False)
    text = predictor.describe(image, mask, max_new_tokens=8,
                              **forced(words + [predictor.stop_ids[-1]]))
    assert text == 'a red box'
    cells = int(seen['prompt_masks'][0].sum())
    assert cells > 0
    decoded = predictor.tokenizer.decode(seen['ids'][0])
    assert 'There are 1 part regions in the picture: region1<vp>' in decoded
    with pytest.raises(ValueError, match='differ from the image size'):
        predictor.describe(image, mask[:10])


def test_chat_on_a_frame_folder(predictor, tmp_path):
    for i in range(3):
        random_image(20, 20, i).save(tmp_path / f'{i:05d}.jpg')
    words = predictor.tokenizer.encode('two cats', add_special_tokens=False)
    text = predictor.chat(str(tmp_path), 'What is here?', max_new_tokens=5,
                          **forced(words + [predictor.stop_ids[-1]]))
    assert text == 'two cats'


def test_generate_masks_and_prompts_gives_the_generation_prompts(predictor, monkeypatch):
    """The [SEG] prompts of the generation equal a teacher-forced pass over
    prompt + answer (the predictor's former extra forward), the masks equal
    generate_masks', and the video path runs the LLM once (generation only)."""
    model = predictor.model
    image = random_image(40, 60, 5)
    predictor._ori_size = (40, 60)
    batch = predictor._image_inputs(image, 'Please segment the cat.')
    plan = seg_plan(predictor, n_seg=2)
    kw = dict(max_new_tokens=10, do_sample=False, eos_token_id=predictor.stop_ids,
              pad_token_id=predictor.pad_index, temperature=None, top_p=None,
              top_k=None)
    vision = dict(pixel_values=batch['pixel_values'], image_flags=batch['image_flags'])
    out = model.generate_masks_and_prompts(batch['input_ids'], batch['g_pixel_values'],
                                           (40, 60), **vision, **kw, **forced(plan))
    ref = model.generate_masks(batch['input_ids'], batch['g_pixel_values'], (40, 60),
                               **vision, **kw, **forced(plan))
    assert torch.equal(out['sequences'], ref['sequences'])
    assert torch.equal(out['pred_masks'], ref['pred_masks'])
    assert torch.equal(out['pred_logits'], ref['pred_logits'])
    c = model.grounding_encoder.hidden_dim
    assert out['seg_prompts'].shape == (2, c)
    with torch.no_grad():
        ids = torch.cat([batch['input_ids'], out['sequences'][None]], dim=1)
        hidden = model.mllm(input_ids=ids, output_hidden_states=True,
                            **vision).hidden_states[-1][0]
        seg = ids[0] == model.seg_token_id
        teacher = model.text_hidden_fcs(hidden[seg])
    torch.testing.assert_close(out['seg_prompts'], teacher, atol=1e-5, rtol=1e-4)
    # no [SEG]: (0, C)
    words = predictor.tokenizer.encode('no', add_special_tokens=False)
    none = model.generate_masks_and_prompts(
        batch['input_ids'], batch['g_pixel_values'], (40, 60), **vision, **kw,
        **forced(words + [predictor.stop_ids[-1]]))
    assert none['seg_prompts'].shape == (0, c) and none['pred_masks'].shape[0] == 0
    # video: generation only (it runs the language model directly); no
    # teacher-forced pass through the MLLM's forward afterwards
    calls = []
    original = model.mllm.forward

    def count(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model.mllm, 'forward', count)
    frames = [random_image(24, 24, 10 + i) for i in range(4)]
    res = predictor.segment_video(frames, 'segment it', max_new_tokens=6,
                                  **forced(seg_plan(predictor, n_seg=1)))
    assert res['masks'].shape == (1, 4, 24, 24)
    assert calls == []
    with pytest.raises(ValueError, match='SAM2Input'):
        predictor.propagate(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                            res['logits'].new_zeros(1, c), [0])
