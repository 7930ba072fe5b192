# Mask <-> caption cycle model, tiny: the tiny Sa2VA
# (configs/_base_/models/sa2va_tiny.py) with the owner's cycle settings
# (./mask_caption_cycle.py); small T / k keep a CPU step short.
_base_ = ['./sa2va_tiny.py', './mask_caption_cycle.py']

model = dict(
    _base_.mask_caption_cycle,
    caption_len=16,
    topk=32,
    data_preprocessor=dict(type='MaskCaptionCycleDataPreprocessor',
                           dtype='float32'))
