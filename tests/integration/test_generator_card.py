"""final/generator.json of a real training run: gandist.load_generator rebuilds G from final/ alone and
reproduces the training-time sample grid bit for bit; gandist-sample needs no config.yaml; a
class-conditional interpolation strip keeps each row's class."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gandist
from gandist import config
from gandist import sample as gsample
from gandist.cli import EXIT_USAGE
from gandist.training.reporting import fixed_inputs, save_grid
from tests.conftest import REPO, env, run_train

STEPS, K = 2, 5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A class-conditional G with BatchNorm and an EMA, so the last grid comes from the EMA generator
    after its BatchNorm calibration."""
    out = tmp_path_factory.mktemp("generator_card") / "run"
    run_train(out, f"train.steps={STEPS}", "variant=cgan", "optim.ema=0.5", "log.grid_size=20")
    return out


@pytest.fixture(scope="module")
def alone(run, tmp_path_factory) -> Path:
    """The run's final/ copied out on its own: no config.yaml anywhere near it."""
    d = tmp_path_factory.mktemp("alone") / "model"
    shutil.copytree(run / "final", d)
    return d


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training process ran (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(n)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_writes_the_card(run):
    card = json.loads((run / "final" / "generator.json").read_text())
    cfg = config.load(run / "config.yaml", [])
    assert card["variant"] == "cgan" and card["network"] == {
        "arch": cfg.model.arch, "z_dim": 16, "channels": 3, "resolution": 32, "width": 8, "norm": cfg.model.g_norm,
        "label_dim": 10, "info_codes": 0}
    assert card["conditioning"]["kind"] == "classes" and card["conditioning"]["class_names"][:2] == ["disk", "square"]
    assert card["weights"] == {"generator": "generator.safetensors", "generator_ema": "generator_ema.safetensors"}
    assert card["default"] == "generator_ema"


def test_load_generator_reproduces_the_training_grid_bit_for_bit(run, alone, tmp_path, one_thread):
    cfg = config.load(run / "config.yaml", [])  # only for the grid's fixed noise, as training drew it
    z, y, nrow = fixed_inputs(cfg, "cpu")
    trained = pixels(run / "samples" / f"step_{STEPS:06d}.png")

    def grid(G) -> np.ndarray:
        path = tmp_path / "again.png"
        with torch.no_grad():
            save_grid(G(z, y), path, nrow)
        return pixels(path)

    G = gandist.load_generator(alone)  # the EMA weights by default
    assert G.card["default"] == "generator_ema" and not G.training
    again = grid(G)
    assert again.shape == trained.shape and (again == trained).all()
    # the comparison can tell generators apart: G's own final weights draw another grid
    assert (grid(gandist.load_generator(alone, which="final")) != trained).any()


def test_sample_needs_no_config_and_matches_the_config_path(run, tmp_path, capsys):
    no_config, no_card = tmp_path / "no_config", tmp_path / "no_card"
    shutil.copytree(run, no_config)
    (no_config / "config.yaml").unlink()
    shutil.copytree(run, no_card)
    (no_card / "final" / "generator.json").unlink()  # a run from before cards: config.yaml
    outs = []
    for d in (no_config, no_card, no_config / "final"):
        out = tmp_path / f"{d.name}.png"
        assert gsample.main([str(d), "--n", "12", "--out", str(out)]) == 0
        assert "final/generator_ema.safetensors" in capsys.readouterr().out or d.name == "final"
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]

    assert gsample.main([str(no_config), "model.g_width=16"]) == EXIT_USAGE
    assert f"{no_config / 'final' / 'generator.json'} describes the generator" in capsys.readouterr().err
    for argv, message in [(["--interpolate", "1"], "--interpolate: must be at least 2"),
                          (["--interpolate", "3", "--nrow", "2"], "--nrow: an interpolation strip")]:
        assert gsample.main([str(no_config), *argv]) == EXIT_USAGE
        assert message in capsys.readouterr().err


class Inputs:
    """What every call of a generator module receives: (z, y) per call, in order."""

    def __init__(self):
        self.calls = []

    def __enter__(self):
        def hook(module, args):
            if type(module).__name__.endswith("Generator") and len(args) == 2:
                self.calls.append((args[0].detach().clone(), args[1].detach().clone()))

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def zy(self):
        return torch.cat([z for z, _ in self.calls]), torch.cat([y for _, y in self.calls])


def test_conditional_interpolation_strip_keeps_its_class(alone, tmp_path, capsys, one_thread):
    strip = tmp_path / "strip.png"
    with Inputs() as seen:
        assert gsample.main([str(alone), "--interpolate", str(K), "--out", str(strip), "--checkpoint", "final"]) == 0
    assert "10 rows of 5 interpolation steps" in capsys.readouterr().out
    z, y = seen.zy()
    assert z.shape == (10 * K, 16) and y.shape == (10 * K, 10)  # one row per class, K images each
    for r in range(10):  # row r: class r all along, one-hot, while z moves from one end to the other
        row_y, row_z = y[r * K:(r + 1) * K], z[r * K:(r + 1) * K]
        assert (row_y == torch.nn.functional.one_hot(torch.tensor(r), 10).float()).all(), (r, row_y)
        assert all(not torch.equal(row_z[i], row_z[i + 1]) for i in range(K - 1))
        # slerp: half-way it stays out near the ends' norm, where the straight line's midpoint dips inside
        assert row_z[K // 2].norm() > 1.1 * ((row_z[0] + row_z[-1]) / 2).norm()

    # the strip's pixels are G's images for exactly those inputs, row after row
    G = gandist.load_generator(alone, which="final")
    with torch.no_grad():
        save_grid(G(z, y), tmp_path / "expected.png", K)
    assert (pixels(strip) == pixels(tmp_path / "expected.png")).all()
    assert Image.open(strip).size == (K * 34 + 2, 10 * 34 + 2)

    # --label: every row that class; --n rows
    with Inputs() as seen:
        assert gsample.main([str(alone), "--interpolate", "3", "--label", "4", "--n", "2",
                             "--out", str(tmp_path / "four.png"), "--out-dir", str(tmp_path / "each")]) == 0
    assert (seen.zy()[1].argmax(1) == 4).all() and len(seen.zy()[1]) == 6
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [f"{i:06d}_class4.png" for i in range(6)]

    # the module entry point with its default output path beside the copied-out weights
    p = subprocess.run([sys.executable, "-m", "gandist.sample", str(alone), "--interpolate", "4", "--n", "3"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert Image.open(alone / "samples" / "interpolate_seed0.png").size == (4 * 34 + 2, 3 * 34 + 2)
