# The dual loop on the tiny model and the sample data: every step = one loop-1
# or RefCOCO batch + one Describe Anything batch (loop 2: GT caption -> mask ->
# 16 x 16 grid -> caption CE), gradients combined by GradSurgeryOptimWrapper
# (the owner's rule: loop 2 projected orthogonal to loop 1, beta 0.5).
_base_ = ['./mask_caption_cycle_tiny.py']

batch_size = 2
model = dict(dual_loop=dict(seg_llm_loss_weight=1.0, grid_threshold=0.5))

train_dataloader = dict(
    batch_size=2 * batch_size,          # step batch + dam batch (the sampler's blocks)
    sampler=dict(batch_size=batch_size, dam_datasets=1),
    dataset=dict(datasets=[
        {{_base_.cycle_pseudo_part}}, {{_base_.cycle_ref_part}},
        dict(type='MixedDataset', datasets=[{{_base_.mc_dam_stream}}],
             data_root_prefix={{_base_.tiny_data.data_root_prefix}},
             pipeline_overrides={{_base_.tiny_data.pipeline_overrides}})]))

optim_wrapper = dict(type='GradSurgeryOptimWrapper', rule='owner', beta=0.5)
