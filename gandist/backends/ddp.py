"""The ddp backend: the Accelerator (process group, DDP's options, mixed precision, trackers) and each
network's backward and guarded optimizer step through accelerate (DdpUpdate).

The Accelerator is made on both backends (it starts the process group and places the device); on the
deepspeed backend the models are then handed to DeepSpeed's engines instead (gandist/backends/zero/).
"""
from __future__ import annotations

import os
import warnings
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (DDPCommunicationHookType, DistributedDataParallelKwargs, GradScalerKwargs,
                              InitProcessGroupKwargs, ProjectConfiguration)

from gandist.backends.guard import nonfinite
from gandist.cli import ConfigError
from gandist.nets.layers import set_bn_group

HOOKS = {"none": DDPCommunicationHookType.NO, "bf16": DDPCommunicationHookType.BF16,
         "fp16": DDPCommunicationHookType.FP16, "powersgd": DDPCommunicationHookType.POWER_SGD}


def hush_buffer_flag_warning():
    """torch 2.14 deprecates DDP's `broadcast_buffers` for `forward_sync_buffers`, a name older torch
    releases (gandist leaves torch unpinned) and accelerate's DDP kwargs do not know.  For gandist the
    two differ only in a broadcast at wrap time of buffers that are equal on every rank anyway, so the
    old name stays and the FutureWarning every rank printed at start is silenced."""
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)


def make_accelerator(cfg) -> Accelerator:
    hush_buffer_flag_warning()
    ddp = DistributedDataParallelKwargs(
        # Running statistics are kept equal across ranks by synchronised BatchNorm (or are
        # per-sample norms), so broadcasting buffers from rank 0 each forward is pointless; it is
        # also what makes two forwards of a BatchNorm D before one backward fail with an in-place
        # error on some torch releases.
        broadcast_buffers=False,
        # Every D step's backward reaches every D parameter (the adversarial loss always takes part,
        # also beside a penalty), and the G step never runs D under DDP (see training_loop), so no
        # parameter is ever unused: searching the graph for them each step would only cost time.
        find_unused_parameters=False,
        # the levers of the dist section (README, Scaling out); their defaults are DDP's own
        bucket_cap_mb=cfg.dist.bucket_mb,
        gradient_as_bucket_view=cfg.dist.gradient_as_bucket_view,
        static_graph=cfg.dist.static_graph,
        comm_hook=HOOKS[cfg.dist.comm_hook],
        comm_state_option={"matrix_approximation_rank": cfg.dist.powersgd_rank,
                           "start_powerSGD_iter": cfg.dist.powersgd_start} if cfg.dist.comm_hook == "powersgd" else {},
    )
    if cfg.train.backend != "ddp" and levers(cfg):
        raise ConfigError(f"dist: {levers(cfg)} act on DDP only; train.backend={cfg.train.backend} ignores them")
    pg = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.timeout_s))
    cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available())
    if cpu:
        # accelerate imports DeepSpeed when it is installed (to unwrap models), and DeepSpeed, finding no GPU,
        # prints a warning on stdout about picking its CPU accelerator; naming it is DeepSpeed's documented way
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    acc = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        cpu=cpu,
        kwargs_handlers=[ddp, pg, GradScalerKwargs(init_scale=cfg.train.fp16_init_scale)],
        # the trackers other than TensorBoard (wandb): training/sinks.py writes TensorBoard itself, into the run
        # directory, with the hyperparameters in the same run
        log_with=[t for t in cfg.log.trackers if t != "tensorboard"] or None,
        project_config=ProjectConfiguration(project_dir=cfg.output.dir),
    )
    set_bn_group(node_group(acc) if cfg.dist.bn_scope == "node" else None)
    if cfg.train.mixed_precision == "fp16" and acc.scaler is None:
        # accelerate quietly runs "fp16" without autocast or loss scaling where it has no fp16 AMP (CPU)
        raise ConfigError(f"train.mixed_precision: fp16 needs a GPU; on {acc.device.type} accelerate would run it "
                          f"as fp32 without a loss scaler. Use bf16 or no there.")
    return acc


def levers(cfg) -> str:
    """The dist section's departures from the exact path, for the start-up panel; "" when there are none."""
    d, on = cfg.dist, []
    if d.comm_hook != "none":
        on.append(f"{d.comm_hook} gradient compression" + (f" (rank {d.powersgd_rank}, from backward "
                                                           f"{d.powersgd_start})" if d.comm_hook == "powersgd" else ""))
    if d.bn_scope == "node" and cfg.model.sync_bn is not False:
        on.append("BatchNorm synchronised per node")
    return ", ".join(on)


def node_group(acc):
    """This node's processes as a process group (torchrun numbers a node's ranks consecutively); every rank
    makes every node's group, as torch requires."""
    if acc.num_processes == 1:
        return None
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
    group, _ = torch.distributed.new_subgroups(group_size=per_node)
    return group


class DdpUpdate:
    """One network's backward and optimizer step on the ddp backend (accelerate).

    step() steps the optimizer unless the gradients (averaged over the ranks by DDP, so the same everywhere)
    hold a non-finite value, and returns that verdict as a 0-d float tensor on the device: a fused optimizer
    takes it as its found_inf (no host read); the others read it on the host before stepping."""

    def __init__(self, acc, opt):
        self.acc, self.opt = acc, opt

    @property
    def param_groups(self):
        return self.opt.param_groups

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def step(self) -> torch.Tensor:
        opt = self.opt
        found = nonfinite([p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None],
                          self.acc.device)
        inner = getattr(opt, "optimizer", opt)  # accelerate's wrapper steps the torch optimizer inside
        if inner.defaults.get("fused"):
            inner.found_inf, inner.grad_scale = found, None  # read by the fused kernel, on the device
            opt.step()
        elif not found.item():  # the one host read of the non-fused optimizers, documented at perf.optimizer
            opt.step()
        opt.zero_grad(set_to_none=True)
        return found

    def weights_changed(self) -> None:
        """The module's weights were written in place (WGAN's clipping): nothing else holds a copy under DDP."""
