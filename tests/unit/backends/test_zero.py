"""gandist.backends.zero.engines without processes: the DeepSpeed config built from settings, a user's JSON checked against
the run, the refusals (ZeRO-3, fp16) and the error naming the extra when deepspeed is missing."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from gandist.backends.zero.engines import (EXTRA, STAGE3_REFUSED, ZeroSettings, build_config, engine_config,
                                           load_user_config, make_engines, require_deepspeed)
from gandist.config import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_build_config_says_what_the_run_decides(stage):
    c = build_config(ZeroSettings(stage=stage, micro_batch=16, world_size=4))
    assert c["zero_optimization"]["stage"] == stage
    assert (c["train_micro_batch_size_per_gpu"], c["train_batch_size"], c["gradient_accumulation_steps"]) == (16, 64, 1)
    assert c["gradient_clipping"] == 0.0  # written out: DeepSpeed's default would clip at norm 1
    assert c["zero_allow_untested_optimizer"] is True  # RMSprop
    assert not {"fp16", "bf16", "torch_autocast", "optimizer", "scheduler"} & set(c)


def test_bf16_is_the_steps_autocast_not_a_deepspeed_section():
    assert build_config(ZeroSettings(precision="bf16")) == build_config(ZeroSettings(precision="no"))


def test_gradient_clipping_is_passed_on_and_checked():
    assert build_config(ZeroSettings(gradient_clipping=5))["gradient_clipping"] == 5.0
    with pytest.raises(ConfigError, match="gradient_clipping"):
        build_config(ZeroSettings(gradient_clipping=-1.0))


def test_deepspeed_accepts_the_built_config():
    from deepspeed.runtime.config import DeepSpeedConfig

    d = DeepSpeedConfig(build_config(ZeroSettings(stage=2, micro_batch=8, world_size=1)))
    assert (d.zero_optimization_stage, d.train_batch_size, d.gradient_clipping) == (2, 8, 0.0)


def test_zero_stage_3_is_refused_with_the_reason():
    with pytest.raises(ConfigError) as e:
        build_config(ZeroSettings(stage=3))
    msg = str(e.value)
    assert msg.startswith("deepspeed.zero_stage: zero_stage 3 is not supported")
    assert "gradient penalty" in msg and "double backward" in msg and "zero_stage 1 or 2" in msg
    assert STAGE3_REFUSED in msg
    with pytest.raises(ConfigError, match=r"deepspeed.zero_stage: 4 is not one of \[0, 1, 2\]"):
        build_config(ZeroSettings(stage=4))


def test_fp16_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="fp16 is not supported with DeepSpeed.*loss scaler.*Use bf16"):
        build_config(ZeroSettings(precision="fp16"))


# -- a user's JSON -----------------------------------------------------------------------------------

def write(tmp_path, obj, name="ds.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


@pytest.mark.parametrize("stage", [1, 2])
def test_shipped_files_equal_the_built_config(stage):
    path = REPO / "launch" / f"deepspeed_zero{stage}.json"
    assert load_user_config(path, 8, 4) == build_config(ZeroSettings(stage=stage, micro_batch=8, world_size=4))


def test_auto_and_absent_batch_keys_are_filled_and_comments_dropped(tmp_path):
    p = write(tmp_path, {"_note": "mine", "train_batch_size": "auto", "zero_optimization": {"stage": 2}})
    c = load_user_config(p, 4, 2)
    assert (c["train_micro_batch_size_per_gpu"], c["train_batch_size"], c["gradient_accumulation_steps"]) == (4, 8, 1)
    assert "_note" not in c
    assert c["gradient_clipping"] == 0.0 and c["zero_allow_untested_optimizer"] is True


def test_the_files_own_settings_are_kept(tmp_path):
    p = write(tmp_path, {"gradient_clipping": 1.0, "zero_optimization": {"stage": 1, "reduce_bucket_size": 1000}})
    c = load_user_config(p, 4, 2)
    assert c["gradient_clipping"] == 1.0 and c["zero_optimization"]["reduce_bucket_size"] == 1000


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"deepspeed.config: .*nope.json does not exist"):
        load_user_config(tmp_path / "nope.json", 4, 2)


def test_invalid_json_names_file_line_and_column(tmp_path):
    p = write(tmp_path, '{\n  "zero_optimization": {"stage": 1,}\n}')
    with pytest.raises(ConfigError, match=r"deepspeed.config .*ds.json: not valid JSON: .* at line 2 column \d+"):
        load_user_config(p, 4, 2)


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(ConfigError, match=r"ds.json: must hold a JSON object at the top level, not list"):
        load_user_config(write(tmp_path, [1, 2]), 4, 2)


@pytest.mark.parametrize("key", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_are_gandists(tmp_path, key):
    p = write(tmp_path, {key: {"type": "Adam"}, "zero_optimization": {"stage": 1}})
    with pytest.raises(ConfigError, match=rf"ds.json: '{key}' is not allowed: gandist builds"):
        load_user_config(p, 4, 2)


@pytest.mark.parametrize("key, value, needed", [("train_micro_batch_size_per_gpu", 8, 4), ("train_batch_size", 16, 8),
                                                 ("gradient_accumulation_steps", 2, 1)])
def test_a_batch_key_that_contradicts_the_run_names_file_key_and_value(tmp_path, key, value, needed):
    p = write(tmp_path, {key: value, "zero_optimization": {"stage": 1}})
    with pytest.raises(ConfigError, match=rf"ds.json: {key} is {value} but this run needs {needed} "):
        load_user_config(p, 4, 2)


def test_stage_3_in_a_file_is_refused_naming_the_file(tmp_path):
    p = write(tmp_path, {"zero_optimization": {"stage": 3}})
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization.stage: zero_stage 3 is not supported"):
        load_user_config(p, 4, 2)
    p = write(tmp_path, {"zero_optimization": {"stage": "2"}})
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization.stage must be an integer, not '2'"):
        load_user_config(p, 4, 2)
    p = write(tmp_path, {"zero_optimization": 2})
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization must be an object"):
        load_user_config(p, 4, 2)


@pytest.mark.parametrize("section, match", [("fp16", "fp16.enabled: fp16 is not supported"),
                                            ("bf16", "bf16.enabled is not supported: gandist keeps fp32 weights"),
                                            ("torch_autocast", "torch_autocast.enabled is not supported")])
def test_precision_sections_are_refused(tmp_path, section, match):
    p = write(tmp_path, {section: {"enabled": True}, "zero_optimization": {"stage": 1}})
    with pytest.raises(ConfigError, match=match):
        load_user_config(p, 4, 2)
    p = write(tmp_path, {section: {"enabled": False}, "zero_optimization": {"stage": 1}})
    assert load_user_config(p, 4, 2)[section] == {"enabled": False}


# -- the extra ---------------------------------------------------------------------------------------

def test_missing_deepspeed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # makes `import deepspeed` raise ImportError
    with pytest.raises(ConfigError) as e:
        require_deepspeed()
    assert "train.backend=deepspeed needs DeepSpeed" in str(e.value)
    assert EXTRA in str(e.value) and "pip install 'gandist[deepspeed]'" in str(e.value)
    with pytest.raises(ConfigError, match=r"gandist\[deepspeed\]"):
        make_engines(None, None, None, None, {})


def test_make_engines_needs_the_process_group():
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed process group"):
        make_engines(None, None, None, None, build_config(ZeroSettings()))


def test_an_engines_buckets_are_no_larger_than_its_network():
    net = torch.nn.Linear(100, 30)  # 3030 parameters -> 3072, a multiple of 1024
    ds = build_config(ZeroSettings(stage=2))
    c = engine_config(ds, net)
    assert c["zero_optimization"]["reduce_bucket_size"] == c["zero_optimization"]["allgather_bucket_size"] == 3072
    assert ds["zero_optimization"]["reduce_bucket_size"] == 500_000_000  # the caller's dict is left alone
    small = build_config(ZeroSettings(stage=1, reduce_bucket_size=2048, allgather_bucket_size=1024))
    assert engine_config(small, net)["zero_optimization"]["reduce_bucket_size"] == 2048


# -- the memory bench's accounting (gandist/bench/memory.py) ------------------------------------------

def test_the_ledger_counts_each_storage_once_under_its_first_heading():
    from gandist.bench.memory import Ledger, tensors_in

    flat = torch.zeros(100)
    views = [flat[:40], flat[40:]]  # ZeRO's parameters: views of one flat buffer
    led = Ledger()
    led.add("params", views)
    led.add("grads", [flat, torch.zeros(10), torch.zeros(0), torch.zeros(5, device="meta")], "g")
    assert led.bytes["params"] == 400 and led.bytes["grads"] == 40
    nested = {"a": [torch.zeros(3), (torch.zeros(2),)], "b": "text", "c": torch.nn.Linear(2, 2)}
    assert sorted(t.numel() for t in tensors_in(nested)) == [2, 3]  # modules are left to their own headings


def test_the_formula_is_the_zero_papers_fp32_accounting():
    from gandist.bench.memory import formula

    P = 1000
    assert formula("ddp", P, 4, 2, 10**9) == {"params": 4000, "grads": 4000, "optimizer": 8000, "buckets": 4000}
    z1, z2 = formula("zero1", P, 4, 2, 10**9), formula("zero2", P, 4, 2, 10**9)
    assert (z1["grads"], z1["optimizer"]) == (4000, 3000)  # Adam's 2 moments and the fp32 master, a quarter each
    assert (z2["grads"], z2["optimizer"], z2["buckets"]) == (1000, 3000, 4096)  # bucket capped at the network
    assert formula("zero2", P, 4, 2, 512)["buckets"] == 2048
