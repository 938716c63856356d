"""The deepspeed backend (train.backend=deepspeed): G and D as one DeepSpeed engine each (engines.py), their
guarded update (update.py), whole weights and optimizer states in the run's checkpoints (checkpoint.py), and
the settings it refuses, with why (limits.py)."""
