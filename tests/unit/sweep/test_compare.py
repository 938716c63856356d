"""gandist-compare's reading of runs (gandist/compare/): each status from the run's own files, the figures of a
row, the keys that differ, the sort, the four formats and the overlaid plots -- on run directories made here
as training leaves them (tests/integration/test_sweep.py does the same on real runs)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import socket
import time

import pytest
import yaml
from PIL import Image
from rich.console import Console

from gandist import config
from gandist.cli import UsageError
from gandist.compare import cli, figures, manifest, runs, status, table
from gandist.training import run_dir as layout
from gandist.training.lock import LOCK


def make_run(path, *, steps=10, logged=10, lr=2.0e-4, seed=0, final=True, saved=None, evals=(), last=None):
    """A run directory as gandist-train leaves it: config.yaml, metrics.jsonl (`logged` training rows, then
    `last` as the last one's values, and `evals`: (step, fid) rows), a checkpoint at `saved`, final/."""
    path.mkdir(parents=True)
    cfg = config.load(None, [f"train.steps={steps}", f"optim.lr_d={lr}", f"train.seed={seed}", f"output.dir={path}"])
    (path / "config.yaml").write_text(config.dump(cfg))
    rows = [{"step": s, "loss_d": 1.0 + s / 100, "loss_g": 2.0 - s / 100, "images_per_sec": 100.0 * s,
             "bad_steps": 0.0} for s in range(1, logged + 1)]
    if rows and last:
        rows[-1].update(last)
    rows += [{"step": s, "fid": v, "kid": v / 100} for s, v in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])))
    if saved:
        ckpt = path / "checkpoints" / f"step_{saved:08d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer.json").write_text("{}")
    if final:
        (path / "final").mkdir()
        (path / "final" / "generator.safetensors").write_bytes(b"")
    return path


def lock(path, age: float):
    f = path / LOCK
    f.write_text(json.dumps({"host": socket.gethostname(), "pid": 4242, "job": "slurm:77", "token": "t",
                             "started": "2026-01-01T00:00:00+0000"}))
    os.utime(f, (time.time() - age,) * 2)


def test_each_status_comes_from_the_run_files(tmp_path):
    done = make_run(tmp_path / "done", saved=10)
    assert status.of(done) == status.Status("done", "", 10, 10)
    assert status.of(done, total=20).state == "failed"  # raised since: no longer done

    running = make_run(tmp_path / "running", logged=4, final=False)
    lock(running, age=1.0)
    s = status.of(running)
    assert s.state == "running" and "pid 4242" in s.detail and "job 77" in s.detail and s.step == 4

    killed = make_run(tmp_path / "killed", logged=4, final=False)
    lock(killed, age=3600.0)  # a heartbeat that stopped an hour ago
    assert status.of(killed).state == "failed" and "heartbeat" in status.of(killed).detail

    preempted = make_run(tmp_path / "preempted", logged=6, saved=6, final=False)
    (preempted / "preempted.json").write_text(json.dumps({"step": 6, "signal": int(signal.SIGUSR1),
                                                          "checkpoint": "x/step_00000006"}))
    s = status.of(preempted)
    assert s.state == "preempted" and "SIGUSR1 at step 6" in s.detail and s.step == 6
    stopped = make_run(tmp_path / "ctrl_c", logged=5, saved=5, final=False)  # Ctrl-C: saved, not failed
    (stopped / "stopped.json").write_text(json.dumps({"step": 5, "signal": int(signal.SIGINT),
                                                      "checkpoint": "x/step_00000005"}))
    s = status.of(stopped)
    assert s.state == "preempted" and "Ctrl-C at step 5" in s.detail and s.step == 5

    nan = make_run(tmp_path / "nan", logged=3, final=False, last={"loss_g": math.nan, "bad_steps": 2.0})
    s = status.of(nan)
    assert s.state == "diverged" and "loss_g not finite at step 3" in s.detail
    marked = make_run(tmp_path / "marked", logged=3, final=False)
    layout.mark_diverged(marked, "loss_d was non-finite for 10 steps in a row", None)
    assert status.of(marked) == status.Status("diverged", "loss_d was non-finite for 10 steps in a row", 3, 10)

    stopped = make_run(tmp_path / "stopped", logged=5, saved=5, final=False)  # no marker: an error
    assert status.of(stopped).state == "failed" and "ended at step 5 of 10" in status.of(stopped).detail
    assert status.of(tmp_path / "never") == status.Status("pending", "not started", 0, None)


def sweep_of_three(tmp_path):
    """Three runs differing in lr and seed: a (best FID 30 at step 5), b (best 20 at 10), c (diverged)."""
    make_run(tmp_path / "s" / "a", lr=1.0e-4, saved=10, evals=[(5, 30.0), (10, 35.0)])
    make_run(tmp_path / "s" / "b", lr=2.0e-4, saved=10, evals=[(5, 40.0), (10, 20.0)])
    make_run(tmp_path / "s" / "c", lr=1.0e+30, seed=1, logged=2, final=False, last={"loss_d": math.inf})
    return runs.collect([str(tmp_path / "s")])


def test_a_row_holds_the_differing_keys_and_the_figures(tmp_path):
    a, b, c = sweep_of_three(tmp_path)
    assert [r.name for r in (a, b, c)] == ["a", "b", "c"]
    assert runs.differing([a, b, c]) == ["optim.lr_d", "train.seed"]  # output.dir differs too, but always does
    assert runs.label(c, ["optim.lr_d", "train.seed"]) == "lr_d=1e+30, seed=1"
    assert a.score("fid") == (35.0, 30.0, 5) and b.score("fid") == (20.0, 20.0, 10) and c.score("fid") is None
    assert a.images_per_sec == 550.0  # the median of 100..1000
    assert math.isinf(c.last("loss_d")) and c.status.state == "diverged"


def test_sorted_best_first_with_runs_lacking_the_figure_last(tmp_path):
    rows = sweep_of_three(tmp_path)
    assert table.default_sort(rows) == "best_fid"
    assert [r.name for r in table.sort(rows, "best_fid")] == ["b", "a", "c"]
    assert [r.name for r in table.sort(rows, "fid")] == ["b", "a", "c"]
    assert [r.name for r in table.sort(rows, "steps")] == ["a", "b", "c"]
    assert [r.name for r in table.sort(rows, "loss_d")] == ["a", "b", "c"]  # equal: their order; inf: last
    with pytest.raises(UsageError, match="--sort: 'speed' is not one of"):
        table.sort(rows, "speed")


def test_the_four_formats(tmp_path):
    rows = table.sort(sweep_of_three(tmp_path), "best_fid")
    parsed = list(csv.DictReader(io.StringIO(table.render(rows, "csv", "best_fid"))))
    assert [r["run"] for r in parsed] == ["b", "a", "c"]
    assert parsed[0]["optim.lr_d"] == "0.0002" and parsed[0]["status"] == "done" and parsed[0]["step"] == "10"
    assert parsed[1]["best_fid"] == "30.0" and parsed[1]["best_fid_step"] == "5" and parsed[1]["fid"] == "35.0"
    assert parsed[2]["status"] == "diverged" and parsed[2]["fid"] == "" and "not finite" in parsed[2]["detail"]

    md = table.render(rows, "markdown", "best_fid").splitlines()
    assert md[0] == "| run | lr_d | seed | status | steps | img/s | loss_d | loss_g | fid | best fid | kid | best kid |"
    assert md[2].startswith("| b | 0.0002 | 0 | done | 10/10 | 550 |") and "| 20 | 20 @10 |" in md[2]
    assert md[-1].startswith("- c: diverged: loss_d not finite at step 2")

    plain = table.render(rows, "plain", "best_fid").splitlines()
    assert plain[0] == "3 run(s), sorted by best_fid" and plain[1].split()[:4] == ["run", "lr_d", "seed", "status"]
    assert plain[3].split()[:6] == ["b", "0.0002", "0", "done", "10/10", "550"]

    console = Console(file=io.StringIO(), width=200)
    assert table.render(rows, "rich", "best_fid", console) is None
    drawn = console.file.getvalue()
    assert "best fid" in drawn and "20 @10" in drawn and "diverged" in drawn


def test_the_overlaid_plots_are_readable_pngs(tmp_path):
    rows = sweep_of_three(tmp_path)
    written = figures.draw(rows, tmp_path / "cmp", "s")
    assert [p.name for p in written] == ["losses.png", "scores.png"]
    for p in written:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 800


def test_a_sweep_lists_its_members_those_not_started_included(tmp_path, capsys):
    sweep = tmp_path / "sw"
    make_run(sweep / "lr=1", lr=1.0e-4, saved=10)
    resolved = runs.flatten(config.to_dict(config.load(None, ["optim.lr_d=0.0003", "train.steps=10"])))
    manifest.write(sweep, {"members": [{"index": 0, "name": "lr=1", "steps": 10},
                                       {"index": 1, "name": "lr=3", "steps": 10, "config": resolved}]})
    assert cli.main([str(sweep), "--format", "csv"]) == 0
    out = capsys.readouterr()
    parsed = list(csv.DictReader(io.StringIO(out.out)))
    assert [(r["run"], r["status"], r["optim.lr_d"]) for r in parsed] == [("lr=1", "done", "0.0001"),
                                                                           ("lr=3", "pending", "0.0003")]
    assert (sweep / "compare" / "losses.png").is_file() and (sweep / "compare" / "table.csv").is_file()
    assert cli.main([str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    yaml.safe_load((sweep / "lr=1" / "config.yaml").read_text())  # untouched: still the run's own


def test_the_judges_scores_are_columns_sorted_the_right_way(tmp_path):
    """Runs evaluated by a judge only (no Inception): sorted by the FD ratio to the floor by default, lower first,
    and the accuracy on the asked-for classes higher first; the columns hold the judge's scores."""
    for name, ratio, acc in (("a", 4.0, 0.95), ("b", 2.0, 0.90)):
        make_run(tmp_path / "j" / name)
        with open(tmp_path / "j" / name / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 10, "judge_fd_ratio": ratio, "judge_acc": acc, "recall": acc}) + "\n")
    rows = runs.collect([str(tmp_path / "j")])
    assert table.default_sort(rows) == "best_judge_fd_ratio"
    assert [r.name for r in table.sort(rows, "judge_fd_ratio")] == ["b", "a"]
    assert [r.name for r in table.sort(rows, "judge_acc")] == ["a", "b"]
    header = table.render(table.sort(rows, "judge_fd_ratio"), "markdown", "judge_fd_ratio").splitlines()[0]
    assert "judge_fd_ratio" in header and "judge_acc" in header and "fid" not in header
