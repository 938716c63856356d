"""gandist-sweep here and gandist-compare on real runs: a 2 x 2 sweep of tiny runs with evaluation (random-weights
Inception), one member diverging (a huge lr with a small train.max_bad_steps); the table's rows, statuses and
differing keys; the plots; TensorBoard (each member once, under the sweep, with its hyperparameters, scalars
grouped); a re-run that does nothing; a member stopped by a signal and resumed by a re-run.  The SLURM job array
is tested in test_slurm.py."""
from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import time

import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata

from gandist.training.sinks import TB_GROUPS
from tests import metrics_fixtures
from tests.conftest import PY, REPO, TINY, env, metrics

inception_weights = metrics_fixtures.inception_weights  # the fixture, for this module
DIVERGED = "lr_d=1e+30,max_bad_steps=2"
MEMBERS = ["lr_d=0.0002,max_bad_steps=2", "lr_d=0.0002,max_bad_steps=1000", DIVERGED, "lr_d=1e+30,max_bad_steps=1000"]


def tiny_set(**more) -> dict:
    return {**{k: yaml.safe_load(v) for k, v in (t.split("=", 1) for t in TINY)}, **more}


def sweep(spec, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "gandist.sweep", str(spec), *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, inception_weights):
    root = tmp_path_factory.mktemp("sweeps")
    spec = root / "gp.yaml"
    spec.write_text(yaml.safe_dump({
        "config": "configs/quickstart.yaml",
        "set": tiny_set(**{"train.steps": 6, "train.sample_every": 3, "eval.metrics": ["fid", "kid"],
                           "eval.every": 3, "eval.num_samples": 32, "eval.feature_layer": 64,
                           "eval.feature_weights": str(inception_weights)}),
        # lr 1e30 makes every step after the first non-finite: with max_bad_steps 2 the guard stops the run
        # (exit 3); with 1000 it skips them to the end (done, its weights frozen)
        "grid": {"optim.lr_d": [2.0e-4, 1.0e+30], "train.max_bad_steps": [2, 1000]},
        "out": str(root / "gp")}, sort_keys=False))
    p = sweep(spec, "--parallel", "2")
    return root, spec, p


def test_the_sweep_runs_every_member_and_ends_with_the_table(swept):
    root, _, p = swept
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]  # a diverged member is a result, not a failure
    assert f"{DIVERGED}: diverged (exit 3)" in p.stdout, p.stdout
    assert p.stdout.count(": done (exit 0)") == 3, p.stdout
    assert "4 run(s), sorted by best_fid" in p.stdout
    manifest = json.loads((root / "gp" / "sweep.json").read_text())
    assert [m["name"] for m in manifest["members"]] == MEMBERS
    assert manifest["members"][2]["overrides"]["optim.lr_d"] == 1.0e+30
    assert manifest["members"][2]["args"][-1] == f"output.dir={root / 'gp' / DIVERGED}"
    assert "training diverged" in (root / "gp" / "logs" / f"{DIVERGED}.log").read_text()


def test_the_table_has_a_row_per_member_with_its_status_and_the_keys_that_differ(swept):
    root, _, _ = swept
    p = subprocess.run([PY, "-m", "gandist.compare", str(root / "gp"), "--format", "csv", "--no-plots"], cwd=REPO,
                       env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    reader = csv.DictReader(io.StringIO(p.stdout))
    assert reader.fieldnames[:4] == ["run", "optim.lr_d", "train.max_bad_steps", "status"]  # only these differ
    rows = {r["run"]: r for r in reader}
    assert sorted(rows) == sorted(MEMBERS)
    assert {n: r["status"] for n, r in rows.items()} == {n: "diverged" if n == DIVERGED else "done" for n in MEMBERS}
    for name in MEMBERS:
        r = rows[name]
        assert (float(r["optim.lr_d"]), int(r["train.max_bad_steps"])) == (float(name[5:].split(",")[0]),
                                                                          int(name.rsplit("=", 1)[1]))
        if name == DIVERGED:
            assert int(r["step"]) < 6 and r["fid"] == "" and "non-finite for 2 steps in a row" in r["detail"], r  # diverged.json
            continue
        logged = [m for m in metrics(root / "gp" / name) if "fid" in m]
        assert (r["step"], r["total"]) == ("6", "6") and float(r["images_per_sec"]) > 0
        assert [m["step"] for m in logged] == [3, 6] and float(r["fid"]) == pytest.approx(logged[-1]["fid"])
        best = min(logged, key=lambda m: m["fid"])
        assert float(r["best_fid"]) == pytest.approx(best["fid"]) and int(r["best_fid_step"]) == best["step"]
        assert float(r["kid"]) == pytest.approx(logged[-1]["kid"])
    order = [r["run"] for r in csv.DictReader(io.StringIO(p.stdout))]
    assert order[-1] == DIVERGED  # sorted by the best FID, the run without one last
    fids = [float(rows[n]["best_fid"]) for n in order[:-1]]
    assert fids == sorted(fids)


def test_the_overlaid_plots_are_written_beside_the_table(swept):
    root, _, _ = swept
    out = root / "gp" / "compare"
    for name in ("losses.png", "scores.png"):
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 800
    assert list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))[0]["run"] in MEMBERS


def test_tensorboard_shows_each_member_once_under_the_sweep_with_its_hyperparameters(swept):
    """What `tensorboard --logdir <root>` reads: one run per member, named <sweep>/<member> (no nested
    tensorboard/ folder, no second timestamped run for the hyperparameters); its scalars grouped."""
    root, _, _ = swept
    mux = EventMultiplexer().AddRunsFromDirectory(str(root))
    mux.Reload()
    assert sorted(mux.Runs()) == sorted(f"gp/{m}" for m in MEMBERS)
    tags = mux.Runs()[f"gp/{MEMBERS[0]}"]
    groups = set(TB_GROUPS.values())
    assert all(t.split("/")[0] in groups for t in tags["scalars"]), tags["scalars"]
    assert {"1 losses/loss_d", "1 losses/loss_g", "2 D outputs/d_real", "4 throughput/images_per_sec",
            "5 health/bad_steps", "6 scores/fid", "6 scores/kid"} <= set(tags["scalars"])
    assert [e.step for e in mux.Scalars(f"gp/{MEMBERS[0]}", "1 losses/loss_d")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in mux.Scalars(f"gp/{MEMBERS[0]}", "6 scores/fid")] == [3, 6]
    assert [e.step for e in mux.Images(f"gp/{MEMBERS[0]}", "samples")] == [3, 6]
    for member in MEMBERS:
        content = mux.SummaryMetadata(f"gp/{member}", hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
        start = hparams_metadata.parse_session_start_info_plugin_data(content)
        assert start.group_name == f"gp/{member}"
        assert start.hparams["optim.lr_d"].number_value == float(member[5:].split(",")[0])
        assert start.hparams["loss.adversarial"].string_value == "bce" and "output.dir" not in start.hparams
        assert not (root / "gp" / member / "tensorboard").exists()


def snapshot(directory) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.rglob("*"))}


def test_a_rerun_of_the_finished_sweep_does_nothing(swept):
    root, spec, _ = swept
    before = snapshot(root / "gp")
    p = sweep(spec, "--parallel", "2", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "0 to run" in p.stdout and "nothing to do" in p.stdout, p.stdout
    assert f"{DIVERGED}" in p.stdout and "skip: diverged" in p.stdout and p.stdout.count("skip: done") == 3
    assert snapshot(root / "gp") == before  # no file written, touched or added


def test_a_member_stopped_by_a_signal_is_resumed_by_a_rerun(tmp_path):
    """SIGTERM to the sweep reaches its running member, which saves and stops (75); the re-run resumes it from
    that checkpoint to the end, every step logged once."""
    spec = tmp_path / "long.yaml"
    out = tmp_path / "long"
    spec.write_text(yaml.safe_dump({"config": "configs/quickstart.yaml",
                                    "set": tiny_set(**{"train.steps": 300, "train.log_every": 10}),
                                    "members": {"only": {}}, "out": str(out)}))
    p = subprocess.Popen([PY, "-m", "gandist.sweep", str(spec)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "only" / "metrics.jsonl").is_file() and metrics(out / "only")):
            assert p.poll() is None and time.monotonic() < deadline, p.stdout.read() if p.poll() else "no step"
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        text, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 75 and "only: preempted (checkpoint saved) (exit 75)" in text, text
    stopped = json.loads((out / "only" / "preempted.json").read_text())["step"]
    assert 10 <= stopped < 300, text

    again = sweep(spec, timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resume from step {stopped}" in again.stdout and "only: done (exit 0)" in again.stdout, again.stdout
    assert f"resumed from {out / 'only' / 'checkpoints' / f'step_{stopped:08d}'}" in \
        (out / "logs" / "only.log").read_text()
    assert [r["step"] for r in metrics(out / "only") if "loss_d" in r] == list(range(10, 301, 10))
