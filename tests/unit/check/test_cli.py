"""gandist-check in one process, in-process (the 2-process runs are tests/integration/test_check.py): the whole
table passes on the quickstart and leaves nothing behind; each failure it can find alone is caught and names this
rank and host; bad input is one line and status 2."""
from __future__ import annotations

import json
import socket

import pytest
import torch

from gandist.check import rounds
from gandist.check.cli import main
from gandist.data.prepare import prepare
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.usefixtures("one_thread")
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
HERE = f"rank 0 on {socket.gethostname()}"
FAST = ["--rounds", "2", "--warmup", "1"]


def check(tmp_path, *args) -> tuple[int, dict]:
    report = tmp_path / "check.json"
    code = main(["--config", QUICKSTART, *TINY, *FAST, "--json", str(report), *args])
    return code, json.loads(report.read_text())


def by_check(report: dict) -> dict:
    return {(r["section"], r["check"]): r for r in report["rows"]}


def failed(report: dict) -> dict:
    return {(r["section"], r["check"]): r["detail"] for r in report["rows"] if r["status"] == "fail"}


def test_the_quickstart_passes_in_one_process_and_leaves_no_trace(tmp_path, capsys):
    run = tmp_path / "runs" / "quickstart"
    code, report = check(tmp_path, f"output.dir={run}")
    out = capsys.readouterr().out
    assert code == 0 and report["ok"] and failed(report) == {}, out
    rows = by_check(report)
    assert {s for s, _ in rows} == {"ranks", "collectives", "batchnorm", "precision", "data", "output.dir",
                                    "evaluation", "training"}
    for key in [("ranks", "same software"), ("ranks", "processes per node"), ("ranks", "same config"),
                ("batchnorm", "synchronised statistics"), ("precision", "finite on this device"),
                ("data", "opens and decodes"), ("data", "read rate"), ("output.dir", "writable"),
                ("output.dir", "same on every node"), ("output.dir", "room for checkpoints"), ("training", "rounds")]:
        assert rows[key]["status"] == "pass", rows[key]
    assert "fp32 on cpu: 4 rounds, every loss finite" in rows[("precision", "finite on this device")]["detail"]
    assert "embedded shapes dataset: 256 images, 32 px" in rows[("data", "opens and decodes")]["detail"]
    assert rows[("training", "train.steps")]["detail"].startswith("1500 steps x ")
    # rank 0's table, as plain lines (not a terminal), ending with the verdict
    lines = out.splitlines()
    assert lines[0].startswith("gandist-check: ") and " on 1 process(es), 1 node(s), cpu" in lines[0]
    assert lines[-1].startswith("gandist-check: all ") and " checks passed" in lines[-1]
    assert any(line.startswith("ok    training    rounds ") for line in lines), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json"]  # the folders it made for output.dir: gone


def test_what_one_rank_can_find_alone_fails_and_names_it(tmp_path):
    """Shards that are not there, an Inception weights file that is not there, and an output.dir that cannot be
    made (its parent is a file: root may write anywhere else), in one run."""
    (tmp_path / "a-file").write_text("not a directory")
    code, report = check(tmp_path, "data.source=shards", f"data.urls={tmp_path}/none/train-{{000000..000001}}.tar",
                         "eval.metrics=[fid]", f"eval.feature_weights={tmp_path}/inception.pth",
                         f"output.dir={tmp_path}/a-file/run")
    assert code == 1 and not report["ok"]
    bad = failed(report)
    assert set(bad) == {("data", "opens and decodes"), ("output.dir", "writable"), ("evaluation", "Inception weights")}
    assert bad[("data", "opens and decodes")] == (f"{HERE}: data.urls: none of the 2 shard(s) exist, e.g. "
                                                  f"{tmp_path}/none/train-000000.tar")
    assert bad[("output.dir", "writable")].startswith(f"{HERE}: cannot write in output.dir {tmp_path}/a-file/run: "
                                                      f"Not a directory")
    assert bad[("evaluation", "Inception weights")].startswith(
        f"{HERE}: eval.feature_weights: {tmp_path}/inception.pth does not exist")
    rows = by_check(report)
    assert rows[("training", "rounds")]["status"] == "pass"  # the rest still ran
    assert rows[("output.dir", "same on every node")]["status"] == "info"


def test_a_shard_of_another_resolution_is_found_by_decoding_it_without_an_index(tmp_path):
    shards = tmp_path / "shards"
    prepare("synthetic", None, shards, size=16, shard_size=8, resolution=64, progress=False, workers=1,
            log=lambda *a: None)
    (shards / "index.json").unlink()  # nothing to read the resolution from: the first samples are decoded
    code, report = check(tmp_path, "data.source=shards", f"data.urls={shards}/train-{{000000..000001}}.tar",
                         "data.workers=1", f"output.dir={tmp_path}/run")
    bad = failed(report)
    assert code == 1 and list(bad) == [("data", "opens and decodes")], bad
    assert bad[("data", "opens and decodes")] == (f"{HERE}: sample '0000001' of {shards}/train-000000.tar: 64x64 px, "
                                                  f"data.resolution is 32")


def test_shards_that_fit_pass_with_their_index(tmp_path):
    shards = tmp_path / "shards"
    prepare("synthetic", None, shards, size=16, shard_size=8, progress=False, workers=1, log=lambda *a: None)
    code, report = check(tmp_path, "data.source=shards", f"data.urls={shards}/train-{{000000..000001}}.tar",
                         "data.workers=1", f"output.dir={tmp_path}/run")
    row = by_check(report)[("data", "opens and decodes")]
    assert code == 0 and row["status"] == "pass", row
    assert "16 images in 2 shard(s), 32 px" in row["detail"] and "index.json" in row["detail"]


def test_rounds_that_run_out_of_memory_are_a_failed_check_not_a_traceback(tmp_path, monkeypatch, capsys):
    """The error itself is made here (this machine has no GPU to fill); what is checked is what becomes of it."""
    def out_of_memory(cfg, acc):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(rounds, "build_models", out_of_memory)
    code, report = check(tmp_path, f"output.dir={tmp_path}/run")
    assert code == 1 and failed(report) == {("training", "rounds"): f"{HERE}: CUDA out of memory. Tried to allocate "
                                                                    f"2.00 GiB"}
    assert ("precision", "finite on this device") not in by_check(report) and "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["--config", "no-such.yaml"], "config file no-such.yaml does not exist"),
    (["--config", QUICKSTART, "train.no_such_key=1"], "unknown key 'train.no_such_key'"),
    (["--config", QUICKSTART, "--rounds", "0"], "--rounds and --timeout must be at least 1"),
])
def test_bad_input_is_one_line_naming_the_rank_and_status_2(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gandist-check: error ({HERE}): ") and says in err[0], err
