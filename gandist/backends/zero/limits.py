"""The settings the DeepSpeed backend refuses, with why: one home for the messages that gandist.config and
engines.py both raise."""

EXTRA = "pip install 'gandist[deepspeed]'"

STAGE3_REFUSED = (
    "zero_stage 3 is not supported: ZeRO-3 keeps only a slice of each weight on a rank and gathers the whole "
    "weight just around the forward and backward of its module, but a gradient penalty (WGAN-GP, R1) makes D's "
    "backward a double backward, which reaches D's weights after ZeRO-3 has released them: with DeepSpeed 0.19 "
    "engine.backward of the D loss fails in a convolution's backward (\"expected stride to be a single integer "
    "value ...\"), also with D's weights held by deepspeed.zero.GatheredParameters or kept whole by "
    "stage3_param_persistence_threshold.  Without a penalty the steps are right, but everything else that reads "
    "the weights outside a forward (the EMA of G, WGAN's weight clipping, checkpoints, samples, the export) sees "
    "empty placeholders.  Use zero_stage 1 or 2: they partition the optimizer state (1) and the gradients (2) "
    "and keep whole weights on every rank.")
FP16_REFUSED = (
    "fp16 is not supported with DeepSpeed: fp16 needs a GPU and a loss scaler, and a gradient penalty must "
    "scale D's output before torch.autograd.grad and unscale after (PyTorch's AMP recipe, gandist.objective.regularizers), "
    "which needs the scaler gandist holds; under ZeRO the scaler lives inside DeepSpeed's optimizer.  Use "
    "bf16 (autocast, no scaler needed) or no.")
COMPILE_REFUSED = (
    "perf.compile is not supported with train.backend=deepspeed (not tried: the engines' forward and backward "
    "hooks inside an inductor graph are DeepSpeed's business); use perf.compile=false")
