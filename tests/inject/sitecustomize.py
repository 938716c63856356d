"""Faults on demand for tests, on PYTHONPATH.  A full disk, for tests of what a failed save does (test_chaos.py): on
PYTHONPATH with GANDIST_TEST_ENOSPC_AT=N set, every torch.save into the checkpoint of step N being
written (checkpoints/.tmp-step_N) writes part of its bytes and then fails with ENOSPC, as a full disk
does.  Python imports sitecustomize at start-up, so this reaches the training processes that torchrun
starts; it does nothing without the variable.  Stalls: see GANDIST_TEST_STALL below."""
import os

_AT = os.environ.get("GANDIST_TEST_ENOSPC_AT")

if _AT:
    import errno

    import torch

    _save = torch.save

    def _full_disk_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and f".tmp-step_{int(_AT):08d}" in str(f):
            with open(f, "wb") as out:
                out.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return _save(obj, f, *args, **kwargs)

    torch.save = _full_disk_save

# Stalls on demand, for tests/integration/test_stalls.py and `python -m gandist.bench elastic --stall`: with
# GANDIST_TEST_STALL=DIR set, a training process (one with RANK) looks, at each chance below, for a file
# DIR/KIND-RANK (its own rank's); it takes the file (renames it away) and stalls once, as KIND says, for the
# "seconds" the file's JSON gives (default: for ever):
#   sleep       the loop sleeps at the start of a round (Stepper.round)
#   read        the round's first batch read blocks, on a pipe nobody writes (a stalled filesystem, a stuck data worker)
#   collective  the rank blocks just before a log step's all-reduce, which it then never enters
#   save        a checkpoint save takes that much longer (a slow filesystem)
#   eval        an evaluation takes that much longer
_STALL = os.environ.get("GANDIST_TEST_STALL")

if _STALL and os.environ.get("RANK"):
    import json
    import threading
    import time

    from gandist.metrics.evaluator import Evaluator
    from gandist.training.saves import Saves
    from gandist.training.step import Stepper

    def _take(kind: str):
        f = os.path.join(_STALL, f"{kind}-{os.environ['RANK']}")
        try:
            os.rename(f, f"{f}.taken")
            with open(f"{f}.taken") as spec:
                return json.loads(spec.read() or "{}")
        except (OSError, ValueError):
            return None

    def _block(spec):
        if spec.get("seconds") is not None:
            time.sleep(float(spec["seconds"]))
        else:
            threading.Event().wait()

    def _wrap(cls, name: str, kind: str, before=None):
        original = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            spec = _take(kind)
            if spec is not None:
                before(self, spec) if before else _block(spec)
            return original(self, *args, **kwargs)

        setattr(cls, name, wrapped)

    def _blocking_read(stepper, spec):
        feed_batch = stepper.feed.batch

        def batch(j):
            stepper.feed.batch = feed_batch
            r, w = os.pipe()
            stepper._stall_pipe = (r, w)  # the write end stays open: the read waits for ever
            os.read(r, 1)
            return feed_batch(j)

        stepper.feed.batch = batch

    _wrap(Stepper, "round", "sleep")
    _wrap(Stepper, "round", "read", _blocking_read)
    _wrap(Saves, "due", "collective")
    _wrap(Saves, "save", "save")
    _wrap(Evaluator, "__call__", "eval")
