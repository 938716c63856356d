"""dist.batch_per_process: the global batch set from the world size, the lr rule, the panel's row, the resume
warning, and the default (the exact path) untouched."""
from __future__ import annotations

import math

import pytest

from gandist import config
from gandist.cli import ConfigError
from gandist.config.help import print_help
from gandist.config.world import describe, lr_factor, resume_warning
from tests.conftest import REPO, TINY

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def load(*overrides):
    return config.load(QUICKSTART, [*TINY, "output.dir=/nonexistent", *overrides])


def test_the_default_keeps_the_global_batch_and_the_lrs():
    cfg = load("train.batch_size=12")
    config.check_world_size(cfg, 3)
    assert cfg.train.batch_size == 12 and lr_factor(cfg) == 1.0
    assert describe(cfg, 3) == "12 global, 4 per rank"
    assert resume_warning(cfg, 2) == []  # the exact path does not depend on the world size
    with pytest.raises(ConfigError, match="not divisible by the world size 5"):
        config.check_world_size(load("train.batch_size=12"), 5)


@pytest.mark.parametrize("rule, factor", [("none", 1.0), ("linear", 6.0), ("sqrt", math.sqrt(6))])
def test_the_global_batch_grows_with_the_world_and_the_lrs_follow_the_rule(rule, factor):
    cfg = load("dist.batch_per_process=5", f"dist.lr_scaling={rule}", "train.batch_size=12")
    config.check_world_size(cfg, 6, [4, 6, 7])  # no world size has to divide anything
    assert cfg.train.batch_size == 30 and lr_factor(cfg) == pytest.approx(factor)
    assert describe(cfg, 6) == (f"30 global = 6 x 5 per rank (dist.batch_per_process: grows with the world, not "
                                f"world-size invariant), lrs x{factor:.3g} (dist.lr_scaling={rule})")


def test_settling_again_gives_the_same_run(tmp_path):
    """A run directory's config.yaml holds the settled batch; read back at another world size it settles again
    from dist.batch_per_process, and its lrs are still one process's."""
    cfg = load("dist.batch_per_process=4", "dist.lr_scaling=linear")
    config.check_world_size(cfg, 2)
    (tmp_path / "config.yaml").write_text(config.dump(cfg))
    again = config.load(str(tmp_path / "config.yaml"))
    assert again.train.batch_size == 8
    config.check_world_size(again, 3)
    assert again.train.batch_size == 12 and lr_factor(again) == 3.0 and again.optim.lr_g == cfg.optim.lr_g


def test_resuming_at_another_world_size_is_warned_about():
    cfg = load("dist.batch_per_process=4")
    config.check_world_size(cfg, 3)
    assert resume_warning(cfg, 3) == [] and resume_warning(cfg, None) == []
    (w,) = resume_warning(cfg, 2)
    assert w == ("dist.batch_per_process=4 on 3 processes where the checkpoint's run had 2: the global batch is 12 "
                 "instead of 8 and the lrs x1.73 instead of x1.41 (dist.lr_scaling=sqrt); the run is not the one an "
                 "uninterrupted run would be")


def test_bad_values_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="dist.batch_per_process"):
        load("dist.batch_per_process=-1")
    with pytest.raises(ConfigError, match="dist.lr_scaling"):
        load("dist.lr_scaling=cubic")


def test_the_keys_have_help(capsys):
    print_help("dist")
    out = capsys.readouterr().out
    assert "batch_per_process" in out and "lr_scaling" in out and "Malladi" in out
