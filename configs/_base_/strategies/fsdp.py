# PyTorch FSDP (parameters, gradients and optimizer states sharded), run by
# mmengine's FlexibleRunner. Needs CUDA GPUs and a distributed launch:
#
#   torchrun --nproc_per_node=8 tools/train.py configs/sa2va_4b.py \
#       --launcher pytorch --strategy fsdp
#
# use_orig_params=True because Sa2VA mixes frozen and trainable parameters
# (LoRA, token rows, mask decoder) inside the wrapped units; bf16 compute with
# fp32 gradient reduction; units of at least 1e7 parameters.
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        type='MMFullyShardedDataParallel',
        use_orig_params=True,
        auto_wrap_policy=dict(type='sa2va.size_based_auto_wrap_policy',
                              min_num_params=int(1e7)),
        mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32',
                             buffer_dtype='float32')),
    # full (rank-0, CPU-offloaded) state dicts, readable without FSDP
    state_dict_cfg='full')
