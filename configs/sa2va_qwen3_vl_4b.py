# Sa2VA-Qwen3-VL-4B: Qwen3-VL-4B-Instruct + SAM2 Hiera-L on the Sa2VA mix.
# Needs the current environment (.venv-current).
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_qwen3_vl_4b.py --launcher pytorch
#
# The Qwen2.5-VL-3B recipe with the differences of the newest Sa2VA codebase's
# projects/sa2va/configs/sa2va_qwenvl3/sa2va_qwen3_4b.py (its only changes
# against sa2va_qwen25_3b.py): the checkpoint (Qwen3VL class, Qwen3VLProcessor:
# here the model base ./_base_/models/sa2va_qwen3_vl.py and the qwen3_vl image
# steps, 16 px patches) and batch 1 per GPU (its comment still says "on 16
# gpus"). Same LoRA r 128 / alpha 256 / dropout 0.05, lr 4e-5, max_length
# 8192, pixel budgets, visual encoder and merger frozen. The official data
# list drops the visual prompts here too; this project trains them (pooled on
# the 32 px merged grid).
_base_ = ['./sa2va_qwen2_5_vl_3b.py']

from projects.sa2va.transforms.qwen_vl import qwen_vl_pipeline_swaps as _swaps  # noqa: E402

sa2va_qwen_vl_path = './pretrained/Qwen3-VL-4B-Instruct'  # path = 'Qwen/Qwen3-VL-4B-Instruct'
# the model, image steps and text settings of ./_base_/models/sa2va_qwen3_vl.py
qwen_vl_backbone = 'qwen3_vl'
model = dict(data_preprocessor=dict(qwen_vl_stats=qwen_vl_backbone),
             mllm=dict(model_path=sa2va_qwen_vl_path))
qwen_vl_pipeline_swaps = dict(_delete_=True, **_swaps(
    qwen_vl_backbone, video=_base_.qwen_vl_frame_pixels.to_dict(),  # noqa: F821
    as_uint8=_base_.qwen_vl_patches_uint8, **_base_.qwen_vl_image_pixels))  # noqa: F821
qwen_vl_text_settings = dict(tokenizer=sa2va_qwen_vl_path)
train_dataloader = dict(
    batch_size=1,                                        # batch_size = 1
    sampler=dict(per_device_batch_size=1 * 8),           # x accumulative_counts = 8
    dataset=dict(pipeline_swaps=qwen_vl_pipeline_swaps,
                 pipeline_overrides=dict(EncodeConversation=qwen_vl_text_settings,
                                         EncodeLLaVAConversation=qwen_vl_text_settings)))
