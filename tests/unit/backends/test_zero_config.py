"""The deepspeed backend's config keys (train.backend, the deepspeed section) and their refusals, checked in
config.load before any work starts; the checkpoint identity that keeps ddp and deepspeed checkpoints apart."""
from __future__ import annotations

import importlib.util

import pytest

from gandist import config
from gandist.backends.zero.limits import EXTRA
from gandist.backends.zero.update import ds_config
from gandist.config import ConfigError
from gandist.training import checkpoint


def test_the_default_backend_is_ddp_and_deepspeed_keys_are_typed():
    cfg = config.load(None)
    assert cfg.train.backend == "ddp" and cfg.deepspeed.zero_stage == 1 and cfg.deepspeed.config == ""
    cfg = config.load(None, ["train.backend=deepspeed", "deepspeed.zero_stage=2", "deepspeed.gradient_clipping=1",
                             "deepspeed.reduce_bucket_size=4096", "deepspeed.overlap_comm=true"])
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.gradient_clipping) == (2, 1.0)
    with pytest.raises(ConfigError, match="train.backend: 'zero' is not one of"):
        config.load(None, ["train.backend=zero"])
    with pytest.raises(ConfigError, match="deepspeed.zero_stage: 4 is not one of"):
        config.load(None, ["train.backend=deepspeed", "deepspeed.zero_stage=4"])


def test_the_keys_build_the_deepspeed_config():
    cfg = config.load(None, ["train.backend=deepspeed", "deepspeed.zero_stage=2", "deepspeed.gradient_clipping=2.5",
                             "deepspeed.reduce_bucket_size=4096", "train.batch_size=64"])
    c = ds_config(cfg, 4)
    assert c["zero_optimization"]["stage"] == 2 and c["zero_optimization"]["reduce_bucket_size"] == 4096
    assert (c["train_micro_batch_size_per_gpu"], c["train_batch_size"], c["gradient_clipping"]) == (16, 64, 2.5)


def test_a_users_file_is_used(tmp_path):
    from tests.conftest import REPO
    cfg = config.load(None, ["train.backend=deepspeed", f"deepspeed.config={REPO / 'launch/deepspeed_zero2.json'}",
                             "train.batch_size=8"])
    c = ds_config(cfg, 2)
    assert c["zero_optimization"]["stage"] == 2 and c["train_micro_batch_size_per_gpu"] == 4
    with pytest.raises(ConfigError, match="deepspeed.config: .*nope.json does not exist"):
        config.load(None, ["train.backend=deepspeed", f"deepspeed.config={tmp_path / 'nope.json'}"])


@pytest.mark.parametrize("overrides, match", [
    (["deepspeed.zero_stage=3"], "zero_stage 3 is not supported: ZeRO-3 keeps only a slice"),
    (["train.mixed_precision=fp16"], "fp16 is not supported with DeepSpeed"),
    (["perf.compile=true"], "perf.compile is not supported with train.backend=deepspeed"),
])
def test_refusals_say_why(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config.load(None, ["train.backend=deepspeed", *overrides])
    config.load(None, ["train.backend=ddp", *overrides[:0]])  # the ddp backend is untouched


def test_missing_deepspeed_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match="install gandist's deepspeed extra: " + EXTRA.replace("[", r"\[")
                       .replace("]", r"\]")):
        config.load(None, ["train.backend=deepspeed"])
    config.load(None)  # a ddp run does not need it


def test_a_checkpoint_of_the_other_backend_is_refused(tmp_path):
    ddp, ds = (checkpoint.identity(config.load(None, [f"train.backend={b}"])) for b in ("ddp", "deepspeed"))
    with pytest.raises(checkpoint.CheckpointError, match="backend: checkpoint has 'ddp', config has 'deepspeed'"):
        checkpoint.check_compatible(tmp_path, {"identity": ddp}, ds)
    with pytest.raises(checkpoint.CheckpointError, match="backend: checkpoint has 'deepspeed', config has 'ddp'"):
        checkpoint.check_compatible(tmp_path, {"identity": ds}, ddp)
    # a checkpoint from before the deepspeed backend is a ddp one
    old = {k: v for k, v in ddp.items() if k != "backend"}
    checkpoint.check_compatible(tmp_path, {"identity": old}, ddp)
    with pytest.raises(checkpoint.CheckpointError, match="backend"):
        checkpoint.check_compatible(tmp_path, {"identity": old}, ds)


def test_a_deepspeed_optimizer_file_must_fit_the_network(tmp_path):
    import torch
    from safetensors.torch import save_file

    from gandist.backends.zero.checkpoint import STEP, check_optimizer

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    whole = {f"{n}/{k}": torch.zeros_like(p) for n, p in net.named_parameters() for k in ("exp_avg", "exp_avg_sq")}
    whole[STEP] = torch.tensor(4.0, dtype=torch.float64)
    shapes = {k: list(v.shape) for k, v in whole.items()}
    assert check_optimizer(shapes, net) == []
    bad = dict(shapes, **{"0.weight/exp_avg": [2, 4], "9.bias/exp_avg": [1]})
    del bad["1.bias/exp_avg_sq"]
    assert check_optimizer(bad, net) == ["0.weight/exp_avg has shape [2, 4], the parameter has [2, 3]",
                                         "unexpected 9.bias/exp_avg", "exp_avg_sq is missing for 1.bias"]
    f = tmp_path / "optimizer_1.safetensors"
    save_file({k: v for k, v in whole.items() if k != "1.bias/exp_avg_sq"}, str(f))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this run's discriminator's optimizer: "
                                                         "exp_avg_sq is missing for 1.bias"):
        checkpoint.check_optimizer_file(f, net, "discriminator")
    f.write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="is corrupt"):
        checkpoint.check_optimizer_file(f, net, "discriminator")
