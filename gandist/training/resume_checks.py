"""What a resumed run may change that changes the meaning of its checkpoint's counters.

A checkpoint counts G steps (rounds); everything else is derived from that count with the config's schedule:
round `step` takes D batches step * optim.n_critic + k (gandist/training/step.py's Stepper.round), D batch j is
the data order's samples [j * B, (j + 1) * B) with B = train.batch_size (gandist/data/feed.py; the shard feed
reads batch j of each rank's stream the same way), and G step i = step * optim.g_steps + k numbers G's noise
draws.  Resuming with another B or n_critic therefore moves the data position (samples are skipped or read
again), and another g_steps renumbers G's draws: allowed -- it is how one changes a run's schedule -- but the
run is then not the same as an uninterrupted one, so the start-up line says exactly what changed.

`save_training` records `schedule(cfg)` in trainer.json; `changes` compares it with the config on resume.  A
checkpoint written before it was recorded has none, and gives no warning.
"""
from __future__ import annotations

from pathlib import Path

from gandist.config.world import resume_warning

KEYS = ("train.batch_size", "optim.n_critic", "optim.g_steps")


def schedule(cfg) -> dict:
    """The config values the checkpoint's counters are counted in."""
    return {"train.batch_size": cfg.train.batch_size, "optim.n_critic": cfg.optim.n_critic,
            "optim.g_steps": cfg.optim.g_steps}


def _saved(state: dict, now: dict) -> dict:
    """The checkpoint's schedule; a key it lacks (an older checkpoint) counts as unchanged."""
    saved = state.get("schedule")
    saved = saved if isinstance(saved, dict) else {}
    return {k: saved[k] if isinstance(saved.get(k), int) and not isinstance(saved.get(k), bool) else now[k]
            for k in KEYS}


def changes(state: dict, cfg, path: Path) -> list[str]:
    """One warning saying what resuming checkpoint `path` (trainer.json's `state`) with `cfg` changes, or none
    when the schedule is the same (or the checkpoint did not record it)."""
    now = schedule(cfg)
    old = _saved(state, now)
    changed = [k for k in KEYS if old[k] != now[k]]
    world = resume_warning(cfg, state.get("world_size"))  # dist.batch_per_process at another world size
    if not changed:
        return world
    step = state["step"]
    what = [f"{k} was {old[k]} in checkpoint {path}, is {now[k]} now" if i == 0 else f"{k} was {old[k]} there, "
            f"is {now[k]} now" for i, k in enumerate(changed)]
    effects = []
    b0, b1 = old["train.batch_size"], now["train.batch_size"]
    c0, c1 = old["optim.n_critic"], now["optim.n_critic"]
    if (b0, c0) != (b1, c1):
        j0, j1 = step * c0, step * c1
        seen0, seen1 = j0 * b0, j1 * b1
        moved = (f"{seen1 - seen0} samples of the data order are skipped" if seen1 > seen0 else
                 f"{seen0 - seen1} samples are read again" if seen1 < seen0 else
                 "none is skipped or read again, but the batches are cut differently")
        effects.append(f"the data continues from D batch {j1} (step {step} x optim.n_critic {c1}) of {b1} samples, "
                       f"i.e. from sample {seen1}, where the run that wrote the checkpoint had read {seen0} "
                       f"({j0} batches of {b0}): {moved}")
    g0, g1 = old["optim.g_steps"], now["optim.g_steps"]
    if g0 != g1:
        effects.append(f"G's steps (which number its noise draws) continue from G step {step * g1} "
                       f"(step {step} x optim.g_steps {g1}) instead of {step * g0}")
    return ["; ".join(what) + ": " + "; ".join(effects) + "; the run is not the same as an uninterrupted one"] + world


def data_state(state: dict, cfg, feed) -> dict:
    """The data position to give the feed: the shard feed warns when the checkpoint's epoch length (in batches)
    differs from its own, as if the shards had changed; when the batch size changed and explains it (the
    warning above says so), that is left out."""
    data = dict(state.get("data") or {})
    old_b = _saved(state, schedule(cfg))["train.batch_size"]
    total = getattr(feed, "total", None)
    if (old_b != cfg.train.batch_size and isinstance(total, int)
            and data.get("batches_per_epoch") == max(1, total // old_b)):
        data.pop("batches_per_epoch")
    return data
