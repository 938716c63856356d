"""Small helpers every layer may use, with no gandist imports of their own: atomic file writes (files.py),
the progress bar (console.py) and the fp32 widening of low-precision tensors (precision.py)."""
