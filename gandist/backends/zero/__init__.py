"""The deepspeed backend (train.backend=deepspeed): engines, their guarded update, checkpoints, and refusals."""
