"""The training loop's parts, which gandist/train.py schedules: the D and G steps (step.py), the run directory
(run_dir.py) and its checkpoints (checkpoint.py), progress, trackers, grids and plots (reporting.py, plots.py),
the device-side counters of a round (tally.py) and the EMA generator (ema.py)."""
