"""The run-directory contract, the README's two commands and CI's use of them."""
from __future__ import annotations

import json
import math
import re

from PIL import Image

from tests.conftest import REPO, metrics, run_train


def test_short_cpu_run_writes_the_whole_contract(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.steps=6", "train.sample_every=3", "train.log_every=2")
    assert (out / "config.yaml").is_file()
    from gandist import config
    assert config.load(out / "config.yaml", []).train.steps == 6

    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 1 and len(info["ranks"]) == 1
    assert {"host", "device", "rank"} <= set(info["ranks"][0])
    assert {"torch", "accelerate", "gandist"} <= set(info["versions"])
    assert "git_commit" in info

    rows = metrics(out)
    assert [r["step"] for r in rows] == [2, 4, 6]
    for r in rows:
        for k in ("loss_d", "loss_g", "images_per_sec"):
            assert math.isfinite(r[k]), (k, r)
        assert r["images_per_sec"] > 0

    grids = sorted(p.name for p in (out / "samples").iterdir())
    assert grids == ["progress.gif", "step_000003.png", "step_000006.png"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["losses.png", "throughput.png"]
    w, h = Image.open(out / "samples" / "step_000006.png").size
    assert w == h and w > 32 * 8  # an 8x8 grid of 32 px images with padding

    import torch
    from safetensors.torch import load_file
    for name in ("generator", "discriminator"):
        sd = load_file(str(out / "final" / f"{name}.safetensors"))
        floats = [v for v in sd.values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float32 for v in floats)
    # rank 0 printed the start line; no tracebacks
    assert "dcgan on 1 process(es)" in p.stdout.replace("\n", "")
    assert "Traceback" not in p.stderr


def test_final_generator_loads_into_a_fresh_network(tmp_path):
    out = tmp_path / "run"
    run_train(out, "train.steps=2")
    import torch
    from safetensors.torch import load_file

    from gandist import config, nets
    cfg = config.load(out / "config.yaml", [])
    G, _ = nets.build(cfg)
    G.load_state_dict(load_file(str(out / "final" / "generator.safetensors")))
    x = G.eval()(torch.randn(4, cfg.model.z_dim))
    assert x.shape == (4, 3, 32, 32) and x.abs().max() <= 1


def test_readme_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, re.S)
    commands = [l.strip() for b in blocks for l in b.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "configs/quickstart.yaml" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\s*$", ci, re.M)
    assert ".venv" in (REPO / ".gitignore").read_text()
