# The owner's dual-loop variant of the main run (v2 --enable_dam_dual_loop,
# mask-caption-cycle.md section 4): every step also draws a Describe Anything
# batch (loop 2: GT caption -> predicted mask -> 16 x 16 grid -> caption CE,
# T2 = T = 256), loop-2 gradient projected orthogonal to loop 1's on the
# all-reduced gradients, g = g1 + 0.5 g2_orth (rule='pcgrad' projects only on
# conflict). bf16 autocast as the main run.
_base_ = ['./mask_caption_cycle_4b.py']

model = dict(dual_loop=dict(caption_len=256, seg_llm_loss_weight=1.0, grid_threshold=0.5))

train_dataloader = dict(
    batch_size=32,                # 2 x 16: step batch + dam batch
    sampler=dict(dam_datasets=1),
    dataset=dict(datasets=[
        {{_base_.mc_mix_savALL_sa1b2500_oi200k}},
        dict(type='MixedDataset', datasets=[{{_base_.refcoco_stream}}]),
        dict(type='MixedDataset', datasets=[{{_base_.mc_dam_stream}}])]))

optim_wrapper = dict(
    _delete_=True,
    type='GradSurgeryOptimWrapper',
    rule='owner',
    missing='skip',           # parameters only one loop reaches stay out of c
    beta=0.5,
    amp_dtype='bfloat16',
    optimizer=dict(type='AdamW', lr={{_base_.lr}}, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, error_if_nonfinite=False),
    accumulative_counts={{_base_.accumulative_counts}})
