# The Sa2VA-4B data mix: every family, with Sa2VA v1's repeats
# (docs/datasets.md), plus family 6 (the owner's mask <-> caption data
# with ground-truth captions, in Sa2VA's forms: mask_caption.py), as one
# MixedDataset and its dataloader.
# Text settings come from the experiment: it sets
#   train_dataloader.dataset.pipeline_defaults
# (tokenizer, template, max_length for EncodeConversation /
# EncodeLLaVAConversation); a dataset whose pipeline states its own (RefCOCO's
# v1 template) keeps it.
_base_ = [
    './visual_prompt.py',
    './refseg.py',
    './refvos.py',
    './gcg.py',
    './vqa.py',
    './mask_caption.py',
]

sa2va_mix = dict(
    type='MixedDataset',
    datasets=[
        {{_base_.refseg_refcoco}}, {{_base_.refseg_refcoco_plus}},
        {{_base_.refseg_refcocog}},
        {{_base_.vqa_llava}},
        {{_base_.refvos_revos}}, {{_base_.refvos_mevis}},
        {{_base_.refvos_ref_ytvos}}, {{_base_.refvos_sav}},
        {{_base_.vqa_chat_univi}},
        {{_base_.gcg_refcocog}}, {{_base_.gcg_grandf}},
        {{_base_.gcg_flickr}}, {{_base_.gcg_openpsg}},
        {{_base_.vp_osprey_conversation}}, {{_base_.vp_osprey_description}},
        {{_base_.vp_osprey_short_form}}, {{_base_.vp_osprey_part_level}},
        {{_base_.vp_osprey_lvis}}, {{_base_.vp_describe_anything}},
        {{_base_.mc_sa2va_refcoco_describe}}, {{_base_.mc_sa2va_dam_segment}},
    ],
    repeats=[4, 4, 4,          # RefCOCO / + / g (v1 lists each 4 times)
             1,                # LLaVA-665K
             10, 4, 4, 4,      # ReVOS, MeViS, Ref-YTVOS, SA-V pseudo
             1,                # Chat-UniVi
             1, 10, 1, 1,      # GCG: RefCOCOg, GranDf, Flickr, OpenPSG
             1, 1, 1, 1, 1,    # Osprey x5
             1,                # Describe Anything
             1, 1])            # mask <-> caption: RefCOCO describe, DAM segment

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    # grouped over the accumulation window, as Sa2VA (batch 2 x accum 4)
    sampler=dict(type='LengthGroupedSampler', per_device_batch_size=2 * 4),
    # pad with the tokenizer's pad id (Qwen2.5 <|endoftext|> = 151643)
    collate_fn=dict(type='sa2va.sa2va_collate_fn', pad_index=151643),
    dataset=sa2va_mix)
