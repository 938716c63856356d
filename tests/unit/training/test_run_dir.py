"""gandist.training.run_dir, the run directory's layout: each plain file written and read back through it, a torn
row or marker read without an error, and no other module of the package naming one of its files."""
from __future__ import annotations

import json
import re
import signal

from gandist.training import run_dir as layout
from tests.conftest import REPO


def test_metrics_rows_are_appended_read_truncated_and_a_torn_row_is_skipped(tmp_path):
    log = layout.MetricsLog(tmp_path)
    for step in (10, 20, 30):
        log.append(log.line({"step": step, "loss_d": 1.0, "loss_g": 2.0, "time": 100.0 + step}))
    log.append(log.line({"step": 20, "judge_fd": 0.5}))
    log.close()
    with open(tmp_path / layout.METRICS, "a") as f:
        f.write('{"step": 40, "loss')  # a kill in the middle of a row
    train, evals = layout.read_metrics(tmp_path)
    assert [r["step"] for r in train] == [10, 20, 30] and evals == [{"step": 20, "judge_fd": 0.5}]
    assert layout.last_logged(tmp_path) == (30, 130.0)
    layout.truncate_metrics(tmp_path, 20)
    train, evals = layout.read_metrics(tmp_path)
    assert [r["step"] for r in train] == [10, 20] and len(evals) == 1
    assert layout.last_logged(tmp_path / "absent") is None


def test_markers_say_how_a_run_stopped_and_a_start_clears_them(tmp_path):
    assert layout.read_stop(tmp_path) is None and layout.read_diverged(tmp_path) is None
    layout.mark_stopped(tmp_path, 7, signal.SIGINT, tmp_path / "checkpoints" / "step_00000007")
    assert (tmp_path / layout.STOPPED).is_file() and not (tmp_path / layout.PREEMPTED).exists()
    assert layout.read_stop(tmp_path)["step"] == 7
    layout.clear_markers(tmp_path)
    layout.mark_stopped(tmp_path, 9, signal.SIGUSR1, None)
    assert json.loads((tmp_path / layout.PREEMPTED).read_text())["signal"] == signal.SIGUSR1
    layout.mark_diverged(tmp_path, "loss_d not finite", None)
    assert layout.read_diverged(tmp_path) == "loss_d not finite"
    (tmp_path / layout.DIVERGED).write_text('{"reas')  # torn: still a divergence, its reason lost
    assert layout.read_diverged(tmp_path) == ""
    layout.clear_markers(tmp_path)
    assert not any((tmp_path / m).exists() for m in layout.MARKERS)


def test_history_config_and_grids_round_trip(tmp_path):
    layout.append_history(tmp_path, {"step": 0, "world_size": 2})
    layout.append_history(tmp_path, {"step": 50, "world_size": 1})
    assert [r["world_size"] for r in layout.read_history(tmp_path)] == [2, 1]
    assert layout.read_config(tmp_path) == {} and not layout.is_run(tmp_path / "x")
    layout.write_config(tmp_path / "run", "train:\n  steps: 5\n")
    assert layout.read_config(tmp_path / "run") == {"train": {"steps": 5}} and layout.is_run(tmp_path / "run")
    for step in (500, 100):
        layout.grid_path(tmp_path, step).parent.mkdir(exist_ok=True)
        layout.grid_path(tmp_path, step).write_bytes(b"")
    (tmp_path / layout.SAMPLES / "sample_seed0.png").write_bytes(b"")
    assert [p.name for p in layout.grids(tmp_path)] == ["step_000100.png", "step_000500.png"]


def test_no_other_module_names_a_file_the_layout_owns():
    owned = [layout.CONFIG, layout.RUN_INFO, layout.METRICS, layout.HISTORY, layout.EVAL, *layout.MARKERS]
    quoted = re.compile("|".join(rf"['\"]{re.escape(name)}['\"]" for name in owned))
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "gandist").rglob("*.py")
                 if p.name != "run_dir.py" and quoted.search(p.read_text())]
    assert offenders == []
