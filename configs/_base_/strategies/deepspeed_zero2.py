# DeepSpeed ZeRO-2 (optimizer states and gradients sharded over the GPUs),
# run by mmengine's FlexibleRunner. Needs CUDA GPUs and a distributed launch:
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_4b.py \
#       --launcher pytorch --strategy deepspeed_zero2
#
# tools/train.py completes it from the experiment (stated in the log):
# train_micro_batch_size_per_gpu = train_dataloader.batch_size,
# gradient_accumulation_steps = optim_wrapper.accumulative_counts,
# gradient_clipping = optim_wrapper.clip_grad.max_norm, bf16 from an
# AmpOptimWrapper with dtype bfloat16, and the optim_wrapper becomes a
# DeepSpeedOptimWrapper around the same optimizer. Keys set here win.
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(
        stage=2,
        overlap_comm=True,
        contiguous_gradients=True,
        reduce_scatter=True,
        reduce_bucket_size=5e8,
        allgather_bucket_size=5e8),
    # checkpoints hold only the trained weights, as the Runner's do
    exclude_frozen_parameters=True)
