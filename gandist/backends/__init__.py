"""The two training backends, side by side: ddp.py (accelerate's DDP: the Accelerator and each network's
update) and zero/ (DeepSpeed ZeRO stages 0-2: engines, update, checkpoint gathering, refused settings).
Both give training/step.py the same update object per network, so the D and G steps are one code."""
