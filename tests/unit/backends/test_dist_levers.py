"""The dist section reaches DDP through accelerate (comm hook, its PowerSGD state, bucket size, flags), is
named in the start-up panel's terms when it leaves the exact path, and is refused where DDP is not used."""
from __future__ import annotations

import pytest
from accelerate.utils import DDPCommunicationHookType

from gandist import config
from gandist.backends.ddp import levers, make_accelerator
from gandist.cli import ConfigError
from tests.conftest import REPO, TINY

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def load(tmp_path, *overrides):
    return config.load(QUICKSTART, [*TINY, f"output.dir={tmp_path}", "log.trackers=[]", *overrides])


def test_the_exact_path_is_the_default(tmp_path):
    cfg = load(tmp_path)
    assert levers(cfg) == ""
    ddp = make_accelerator(cfg).ddp_handler
    assert ddp is None or (ddp.comm_hook == DDPCommunicationHookType.NO and ddp.bucket_cap_mb == 25)


def test_the_levers_reach_ddp(tmp_path):
    cfg = load(tmp_path, "dist.comm_hook=powersgd", "dist.powersgd_rank=2", "dist.powersgd_start=5",
               "dist.bucket_mb=4", "dist.static_graph=true", "dist.gradient_as_bucket_view=true", "dist.bn_scope=node")
    ddp = make_accelerator(cfg).ddp_handler
    assert ddp.comm_hook == DDPCommunicationHookType.POWER_SGD
    assert ddp.comm_state_option == {"matrix_approximation_rank": 2, "start_powerSGD_iter": 5}
    assert (ddp.bucket_cap_mb, ddp.static_graph, ddp.gradient_as_bucket_view) == (4, True, True)
    assert levers(cfg) == "powersgd gradient compression (rank 2, from backward 5), BatchNorm synchronised per node"
    assert levers(load(tmp_path, "dist.bn_scope=node", "model.sync_bn=false")) == ""  # nothing to scope


def test_a_lever_on_the_deepspeed_backend_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="act on DDP only"):
        make_accelerator(load(tmp_path, "train.backend=deepspeed", "dist.comm_hook=bf16"))
