"""What a user watches during a run: the start-up panel and the closing summary, TensorBoard (scalars,
scores, sample grids), the matplotlib plots (refreshed while the run goes), samples/progress.gif, and
files the rest of the user's group can read."""
from __future__ import annotations

import os
import pty
import subprocess
import time

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gandist import config, nets
from gandist.training.sinks import TB_GROUPS
from tests.conftest import REPO, env, metrics, run_train, train_cmd
from tests import metrics_fixtures

QUICK = REPO / "configs" / "quickstart.yaml"
inception_weights = metrics_fixtures.inception_weights  # the fixture, for this module


@pytest.fixture(scope="module")
def run(tmp_path_factory, inception_weights):
    out = tmp_path_factory.mktemp("observed") / "wgan_run"
    p = run_train(out, "variant=wgan_gp", "model.conditioning=projection", "train.steps=6", "train.sample_every=2",
                  "train.log_every=1", "eval.metrics=[kid]", "eval.every=3", "eval.num_samples=16",
                  "eval.feature_layer=64", f"eval.feature_weights={inception_weights}", "checkpoint.every=3")
    return out, p.stdout


def test_start_up_panel_and_summary_say_what_runs_and_where(run):
    out, stdout = run
    text = " ".join(stdout.replace(":", " ").split())  # a log file gets `key: value` lines
    cfg = config.load(out / "config.yaml")
    torch.manual_seed(0)
    G, D = nets.build(cfg)
    for words in ["wgan_gp Gulrajani et al. 2017", f"G {sum(p.numel() for p in G.parameters()):,} parameters",
                  f"D {sum(p.numel() for p in D.parameters()):,}", "1 on 1 node(s)", "precision fp32",
                  "8 global, 8 per rank", "embedded shapes dataset 256 images, 32 px, 3 channel(s)", "steps 0->6",
                  f"run dir {out}", f"tensorboard {out} (tensorboard --logdir {out.parent})", "gandist done",
                  "last losses loss_d", "last scores kid", "throughput", "images/s", f"final weights {out / 'final'}", f"plots {out / 'plots'}"]:
        assert words in text, words


def test_tensorboard_holds_every_logged_scalar_the_scores_and_each_grid(run):
    out, _ = run
    # in the run directory itself, so `tensorboard --logdir runs` shows the run once, under its own name
    assert not (out / "tensorboard").exists() and len(list(out.glob("events.out.tfevents.*"))) == 1
    ea = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = {t.split("/", 1)[1]: t for t in ea.Tags()["scalars"]}  # grouped: "1 losses/loss_d", ...
    assert {t.split("/", 1)[0] for t in tags.values()} <= set(TB_GROUPS.values())
    rows = metrics(out)
    logged = {k for r in rows for k in r if k not in ("step", "time")}
    assert logged <= set(tags) and {"loss_d", "loss_g", "wasserstein", "gp", "kid", "images_per_sec"} <= set(tags)
    assert tags["loss_d"] == "1 losses/loss_d" and tags["gp"] == "3 Wasserstein and penalty/gp"
    assert [e.step for e in ea.Scalars(tags["loss_d"])] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in ea.Scalars(tags["kid"])] == pytest.approx([r["kid"] for r in rows if "kid" in r])
    assert "_hparams_/session_start_info" in ea.Tags()["tensors"]  # the hyperparameters, in the same run
    images = ea.Images("samples")
    assert [e.step for e in images] == [2, 4, 6]
    png = Image.open(out / "samples" / "step_000006.png")
    assert (images[-1].width, images[-1].height) == png.size


def test_plots_are_readable_images_and_the_gif_has_every_grid(run):
    out, _ = run
    for name in ("losses", "throughput", "fid"):
        with Image.open(out / "plots" / f"{name}.png") as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 600
    assert not (out / "losses.png").exists()  # the hand-drawn PIL plot is gone
    with Image.open(out / "samples" / "progress.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
        gif.seek(2)
        last = gif.convert("RGB")
    assert last.size == Image.open(out / "samples" / "step_000006.png").size


def test_weights_and_checkpoints_follow_the_umask(run):
    out, _ = run
    files = [*(out / "final").glob("*.safetensors"), *(out / "checkpoints").glob("*/*")]
    assert files
    mask = os.umask(0)
    os.umask(mask)
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_no_trackers_writes_no_tensorboard(tmp_path):
    run_train(tmp_path / "run", "train.steps=2", "log.trackers=[]")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_plots_are_refreshed_while_the_run_goes(tmp_path):
    """Their mtime moves between two sample steps of a run that is still going (the real nets, so a
    sample interval lasts long enough to look at)."""
    out = tmp_path / "run"
    cmd = train_cmd(out, "model.z_dim=100", "model.g_width=64", "model.d_width=64", "train.batch_size=32",
                    "train.steps=30", "train.sample_every=10", "train.log_every=5")
    p = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = set()
    plot = out / "plots" / "losses.png"
    while p.poll() is None:
        if plot.exists() and not (out / "final").exists():
            seen.add(plot.stat().st_mtime_ns)
        time.sleep(0.02)
    log = p.stdout.read()
    assert p.returncode == 0, log[-3000:]
    assert len(seen) >= 2, f"losses.png seen with {len(seen)} mtime(s) before the end"


def on_a_terminal(cmd: list[str], **extra_env) -> tuple[int, str]:
    """Run cmd with a pseudo-terminal as its stdout and stderr, as a user at a shell sees it."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, cwd=REPO, env=env(TERM="xterm-256color", COLUMNS=120, **extra_env),
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=60), out.decode(errors="replace")


def test_a_run_that_ends_in_an_error_leaves_the_terminal_cursor_shown(tmp_path):
    """The progress bar hides the cursor while it runs; a run that stops with an error (here: diverged,
    status 3) must stop the bar, or the user's shell is left without a cursor."""
    hide, show = "\x1b[?25l", "\x1b[?25h"
    rc, text = on_a_terminal(train_cmd(tmp_path / "run", "train.steps=20", "optim.lr_d=1.0e+30",
                                       "train.max_bad_steps=3", "log.progress=true"))
    assert rc == 3, text[-4000:]
    assert "training diverged" in text
    assert hide in text, "no progress bar was drawn on the terminal:\n" + text[-4000:]
    assert text.rfind(show) > text.rfind(hide), text[-2000:]
