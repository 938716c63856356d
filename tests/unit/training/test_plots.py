"""gandist.training.plots: the progress GIF keeps at most ~100 evenly spread grids; the curves are smoothed
without losing a short run; the plots are drawn from metrics.jsonl."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from gandist import config
from gandist.config import ConfigError
from gandist.training import plots
from gandist.training import run_dir as layout
from tests.conftest import REPO


def test_gif_frames_are_evenly_thinned_and_keep_the_first_and_last(tmp_path):
    grids = [tmp_path / f"step_{i:06d}.png" for i in range(1, 251)]
    picked = plots.gif_frames(grids)
    assert len(picked) == plots.GIF_FRAMES and picked[0] == grids[0] and picked[-1] == grids[-1]
    gaps = {grids.index(b) - grids.index(a) for a, b in zip(picked, picked[1:])}
    assert gaps <= {2, 3}
    assert plots.gif_frames(grids[:7]) == grids[:7]


def test_progress_gif_from_the_grids(tmp_path):
    for i in range(1, 131):
        grid = layout.grid_path(tmp_path, i)
        grid.parent.mkdir(exist_ok=True)
        Image.new("RGB", (12, 10), (i, 0, 255 - i)).save(grid)
    Image.new("RGB", (12, 10)).save(grid.parent / "sample_seed0.png")  # not a training grid
    gif = plots.progress_gif(tmp_path)
    with Image.open(gif) as im:
        assert im.n_frames == plots.GIF_FRAMES and im.size == (12, 10)
        im.seek(im.n_frames - 1)
        assert im.convert("RGB").getpixel((0, 0))[0] == pytest.approx(130, abs=4)  # the last grid is the last frame


def test_smoothing_follows_a_constant_and_leaves_short_runs_alone():
    assert plots.smooth([2.0] * 300) == pytest.approx([2.0] * 300)
    assert plots.smooth([1.0, 5.0, 3.0]) == [1.0, 5.0, 3.0]
    long = plots.smooth([0.0, 10.0] * 200)
    assert max(long[100:]) - min(long[100:]) < 2.0  # the alternation is averaged out


def test_refresh_draws_losses_critic_panel_scores_and_throughput(tmp_path):
    rows = [{"step": s, "loss_d": -s * 0.1, "loss_g": s * 0.05, "wasserstein": s * 0.2, "gp": 0.1,
             "images_per_sec": 500 + s} for s in range(1, 40)]
    rows += [{"step": 20, "fid": 80.0}, {"step": 39, "fid": 60.0}, '{"step": 40, "loss']  # a torn last row
    (tmp_path / "metrics.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    (tmp_path / "samples").mkdir()
    written = plots.refresh(tmp_path, "wgan_gp: test")
    assert sorted(p.name for p in written) == ["fid.png", "losses.png", "throughput.png"]
    with Image.open(tmp_path / "plots" / "losses.png") as im:
        two_panels = im.size
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({k: v for k, v in r.items() if k in
                                                                  ("step", "loss_d", "loss_g", "images_per_sec")})
                                                      for r in rows[:39]))
    plots.refresh(tmp_path, "dcgan: test")
    with Image.open(tmp_path / "plots" / "losses.png") as im:
        assert im.size[1] < two_panels[1]  # no critic panel without a critic


def test_tensorboard_is_on_by_default_and_an_absent_tracker_is_refused():
    assert config.load(REPO / "configs" / "quickstart.yaml").log.trackers == ["tensorboard"]
    with pytest.raises(ConfigError, match="log.trackers: 'neptune' is not one of"):
        config.load(REPO / "configs" / "quickstart.yaml", ["log.trackers=[neptune]"])


def test_the_scores_panel_shows_the_judge_scores_beside_fid(tmp_path):
    def height(rows):
        (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        plots.refresh(tmp_path, "cgan: test")
        with Image.open(tmp_path / "plots" / "fid.png") as im:
            return im.size[1]

    one = height([{"step": s, "fid": 50.0 - s} for s in (10, 20)])
    judge = {"judge_fd": 3.0, "judge_fd_ratio": 1.5, "judge_acc": 0.9, "precision": 0.8, "recall": 0.7,
             "density": 0.9, "coverage": 0.8}
    # fid, the ratio (judge_fd itself is not drawn beside it), the accuracy, and P/R/D/C on one axis
    four = height([{"step": s, "fid": 50.0 - s, **judge} for s in (10, 20)])
    assert four == pytest.approx(4 * one, rel=0.02)
    no_floor = {k: v for k, v in judge.items() if k != "judge_fd_ratio"}
    assert height([{"step": s, **no_floor} for s in (10, 20)]) == pytest.approx(3 * one, rel=0.02)
