"""gandist.liveness's pieces in one process: what the loop reports, the deadlines the watchdog judges by, the
save's budget, and the Verdict the ranks agree on (the multi-process behaviour: tests/integration/test_stalls.py)."""
from __future__ import annotations

import errno
import time

import pytest
import torch

from gandist.liveness import Progress, Watchdog, save_budget
from gandist.training.disk import DiskFull
from gandist.training.tally import Tally, Verdict


def test_progress_records_phase_step_budget_and_waiting():
    p = Progress(budget_s=7)
    p.at("step", 12)
    step, phase, budget, since, waiting = p.now
    assert (step, phase, budget, waiting) == (12, "step", 7, False)
    p.within("data wait")  # a part of the step: its budget kept
    assert p.now[:3] == (12, "data wait", 7) and p.now[3] >= since
    with p.waiting("step"):
        assert p.now[1:3] == ("step", 7) and p.now[4] is True
    assert p.now[4] is False
    p.at("evaluation", 20, budget_s=300)
    assert p.now[:3] == (20, "evaluation", 300)


def test_a_waiting_rank_gets_hang_timeout_s_more_than_its_budget():
    w = Watchdog(5.0, rank=0, world=1, startup_s=60)  # one process: no thread, no store
    now = time.monotonic()
    assert 64 < w._deadline(now) <= 65  # start-up waits for the others: its budget plus hang_timeout_s
    w.at("step", 3)
    assert 4 < w._deadline(time.monotonic()) <= 5
    with w.waiting():
        assert 9 < w._deadline(time.monotonic()) <= 10
    w.at("save", 3, budget_s=40)
    assert w._deadline(time.monotonic() + 41) < 0
    w.close()


def test_a_save_budget_grows_with_the_measured_save_time_and_the_checkpoint_size():
    assert save_budget(90, 0.0, 0) == 180  # never less than twice hang_timeout_s
    assert save_budget(90, 60.0, 0) == 90 + 240  # four times the longest save so far
    assert save_budget(90, 1.0, 10_000_000_000) == 90 + 1000  # 10 GB at 10 MB/s


def test_the_verdict_travels_as_numbers_and_comes_back_typed():
    v = Verdict(stop=10, save_due=True, lock_lost=False)
    assert Verdict.of(v.vector()) == v and Verdict.of(Verdict().vector()) == Verdict()
    tally = Tally(torch.device("cpu"), max_bad_steps=3)
    assert tally.sync(v) == v  # one rank: its own verdict is the agreed one
    assert tally.sync() == Verdict()  # nothing carried over from the last sync


def test_a_full_disk_on_a_metrics_row_is_a_diskfull_naming_the_file(tmp_path):
    from types import SimpleNamespace

    from gandist.training import run_dir as layout
    from gandist.training.sinks import Sinks

    class Full:
        def write(self, line):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    s = Sinks.__new__(Sinks)
    s.tb, s.others, s.run_dir = None, [], tmp_path
    s.cfg = SimpleNamespace(checkpoint=SimpleNamespace(keep=2))
    s.metrics = layout.MetricsLog(tmp_path)
    s.metrics._f = Full()
    with pytest.raises(DiskFull, match=f"could not write a row of {tmp_path}/metrics.jsonl"):
        s.record(5, {"loss_d": 1.0})
