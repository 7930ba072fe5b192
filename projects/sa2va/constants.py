"""Numbers and token strings shared by data and model code.

One place for the seed's constants (``../docs/data_path.md`` explains each).
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_SIZE = 448          # InternViT input tile (pixels)
PATCH_SIZE = 14           # 448 / 14 = 32 patches per side
DOWNSAMPLE_RATIO = 0.5    # pixel shuffle: 32 * 0.5 = 16
GRID_SIZE = 16            # feature grid per tile: 16 x 16
NUM_IMAGE_TOKENS = GRID_SIZE * GRID_SIZE  # 256 <IMG_CONTEXT> per tile / frame
SAM2_IMAGE_SIZE = 1024    # SAM2 input, uint8 [0, 255], normalised in the model
SAM2_LOW_RES_MASK = 256   # SAM2 low-res mask output (1024 / 4)

IGNORE_INDEX = -100

# Image placeholder in raw annotation text.
IMAGE_PLACEHOLDER = '<image>'
VIDEO_PLACEHOLDER = '<video>'

# InternVL image tokens (already in the InternVL2.5 tokenizers' vocabularies).
IMG_START_TOKEN = '<img>'
IMG_END_TOKEN = '</img>'
IMG_CONTEXT_TOKEN = '<IMG_CONTEXT>'

# Tokens Sa2VA adds (``special_tokens=True``).
SEG_TOKEN = '[SEG]'
PHRASE_START_TOKEN = '<p>'
PHRASE_END_TOKEN = '</p>'
VP_START_TOKEN = '<vp>'
VP_END_TOKEN = '</vp>'

INTERNVL_IMAGE_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN,
                         '<quad>', '</quad>', '<ref>', '</ref>', '<box>',
                         '</box>')
#: Image-token strings of each backbone family, ``(start, context, end)``:
#: an image block is ``start + context * n + end``; a visual-prompt block is
#: ``<vp> + context * k + </vp>``. InternVL's are InternVL's own tokens;
#: Qwen-VL's are Qwen2.5-VL / Qwen3-VL's ``<|vision_start|>``,
#: ``<|image_pad|>``, ``<|vision_end|>`` (the released Sa2VA-Qwen text: its
#: tokenizer is Qwen's plus :data:`SA2VA_SPECIAL_TOKENS`, no ``<img>``).
IMAGE_TOKENS = {
    'internvl': (IMG_START_TOKEN, IMG_CONTEXT_TOKEN, IMG_END_TOKEN),
    'qwen_vl': ('<|vision_start|>', '<|image_pad|>', '<|vision_end|>'),
}
#: Special tokens of the Qwen2.5-VL / Qwen3-VL tokenizers, in id order from
#: 151643 (``<|endoftext|>``) to 151656 (``<|video_pad|>``).
QWEN_VL_SPECIAL_TOKENS = (
    '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>',
    '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>',
    '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>',
    '<|image_pad|>', '<|video_pad|>')


def image_tokens(backbone: str) -> tuple:
    """``(start, context, end)`` image-token strings of ``backbone`` (a key
    of :data:`IMAGE_TOKENS`); raises ``KeyError`` naming the choices."""
    if backbone not in IMAGE_TOKENS:
        raise KeyError(f'unknown image tokens {backbone!r}; one of '
                       f'{sorted(IMAGE_TOKENS)}')
    return IMAGE_TOKENS[backbone]


SA2VA_SPECIAL_TOKENS = (SEG_TOKEN, PHRASE_START_TOKEN, PHRASE_END_TOKEN,
                        VP_START_TOKEN, VP_END_TOKEN)
