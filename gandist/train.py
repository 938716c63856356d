"""gandist.train: config -> Accelerator -> parts -> training loop -> final export.

    python -m gandist.train --config configs/quickstart.yaml train.steps=500
    accelerate launch -m gandist.train --config configs/wgan_gp_celeba.yaml
    torchrun --nproc_per_node 2 -m gandist.train --config configs/quickstart.yaml
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from gandist import __version__, checkpoint, config, nets
from gandist.config import ConfigError
from gandist.distributed import Draws, generator, make_accelerator, sum_over_ranks, where
from gandist.metrics import MetricError
from gandist.training_loop import NonFiniteLoss

# Exit statuses.  After a signal-triggered checkpoint the run exits with EXIT_REQUEUE (the SLURM
# script requeues the job on it) and rank 0 leaves PREEMPTED in the run directory, for launchers
# such as torchrun that do not pass their workers' exit status on.
EXIT_ERROR = 1  # unexpected error, or a lost peer process
EXIT_CONFIG = 2  # bad config or unusable checkpoint
EXIT_DIVERGED = 3  # train.max_bad_steps non-finite steps in a row
EXIT_REQUEUE = 75
PREEMPTED = "preempted.json"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied after the file, e.g. train.steps=100")
    return p.parse_args(argv)


# -- pieces of main(), each small -----------------------------------------------------------------

def decide_resume(cfg, run_dir: Path) -> Path | None:
    """Which checkpoint to start from, decided before any work; may refuse to overwrite a run."""
    r = cfg.train.resume
    if r == "no":
        if checkpoint.complete(run_dir) and not cfg.train.overwrite:
            raise ConfigError(f"train.resume: output.dir {run_dir} holds checkpoints; use train.resume=auto to "
                              f"continue that run, or train.overwrite=true to start afresh there")
        return None
    if r == "auto":
        path = checkpoint.latest(run_dir)
        if path is None:
            return None
        step = checkpoint.step_of(path)
    else:
        path = Path(r)
        if not path.is_dir():
            raise ConfigError(f"train.resume: checkpoint {path} does not exist (expected a checkpoint directory, "
                              f"a run directory, 'auto' or 'no')")
        if not (path / "trainer.json").exists() and checkpoint.latest(path) is not None:
            path = checkpoint.latest(path)  # a run directory: its newest checkpoint
        step = checkpoint.read_trainer_state(path)["step"]
        newer = [p.name for p in checkpoint.complete(run_dir) if checkpoint.step_of(p) > step]
        if newer and not cfg.train.overwrite:
            raise ConfigError(f"train.resume: output.dir {run_dir} holds checkpoints newer than {path} "
                              f"({', '.join(newer)}); continuing from step {step} there would mix two histories. "
                              f"Use another output.dir, or train.overwrite=true to delete them")
    if step > cfg.train.steps:
        raise ConfigError(f"train.steps: {cfg.train.steps} is below the step of checkpoint {path} ({step}); "
                          f"raise train.steps to continue the run")
    return path


def prepare_run_dir(cfg, run_dir: Path, resume_from: Path | None):
    """Rank 0, before any work: clear what the chosen start point makes obsolete."""
    import shutil

    if cfg.train.resume == "no" and cfg.train.overwrite:
        shutil.rmtree(checkpoint.checkpoints_dir(run_dir), ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    if resume_from is not None and cfg.train.overwrite:
        checkpoint.remove_after(run_dir, checkpoint.read_trainer_state(resume_from)["step"])
    (run_dir / PREEMPTED).unlink(missing_ok=True)


def truncate_metrics(run_dir: Path, start: int):
    """Rows logged after the step we start from belong to the lost tail of an interrupted run."""
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return
    kept = []
    for line in f.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a row torn by a kill
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, f)


def make_optimizer(o, params, lr: float):
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2))
    return torch.optim.RMSprop(params, lr=lr)


def identity(cfg) -> dict:
    """What a checkpoint must share with the config to be loadable."""
    return {"variant": cfg.variant, "arch": cfg.model.arch, "z_dim": cfg.model.z_dim,
            "resolution": cfg.data.resolution, "channels": cfg.data.channels,
            "label_dim": config.label_dim(cfg), "g_width": cfg.model.g_width, "d_width": cfg.model.d_width,
            "g_norm": cfg.model.g_norm, "d_norm": cfg.model.d_norm, "spectral_norm": cfg.model.spectral_norm,
            "conditioning": cfg.model.conditioning, "optimizer": cfg.optim.name}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_files(cfg, acc, run_dir: Path):
    from accelerate.utils import gather_object

    me = {"rank": acc.process_index, "host": socket.gethostname(), "device": str(acc.device),
          "local_rank": acc.local_process_index}
    ranks = gather_object([me])
    if acc.is_main_process:
        import accelerate

        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.dump(cfg))
        info = {"world_size": acc.num_processes, "ranks": ranks, "distributed_type": str(acc.distributed_type),
                "mixed_precision": cfg.train.mixed_precision,
                "versions": {"gandist": __version__, "torch": torch.__version__,
                             "accelerate": accelerate.__version__, "python": platform.python_version()},
                "git_commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        checkpoint.write_json_atomic(run_dir / "run.json", info)


def fixed_inputs(cfg, device):
    """The noise and labels behind every sample grid (the same for the whole run)."""
    n = cfg.log.grid_size
    z = torch.randn(n, cfg.model.z_dim, generator=generator(cfg.train.seed, 0, "fixed"))
    y, nrow = None, max(1, int(math.sqrt(n)))
    ld = config.label_dim(cfg)
    if ld and not cfg.data.attributes:  # one class per row
        nrow = cfg.data.num_classes
        y = torch.nn.functional.one_hot((torch.arange(n) // nrow) % ld, ld).float()
    elif ld:
        y = (torch.rand(n, ld, generator=generator(cfg.train.seed, 1, "fixed")) > 0.5).float()
    return z.to(device), (y.to(device) if y is not None else None), nrow


def ema_inputs(cfg, step: int, device):
    """The noise and labels whose statistics become the EMA generator's BatchNorm statistics at `step`:
    a draw of the whole set on every rank, so every rank and world size calibrates alike."""
    from gandist.data.source import condition

    n, g = cfg.optim.ema_bn_samples, generator(cfg.train.seed, step, "ema_bn")
    z = torch.randn(n, cfg.model.z_dim, generator=g)
    ld, y = config.label_dim(cfg), None
    if ld:  # labels as the data gives them (classes, or 0/1 attributes), made into vectors as in training
        labels = torch.randint(2, (n, ld), generator=g) if cfg.data.attributes else torch.randint(ld, (n,), generator=g)
        y = condition(labels, cfg).to(device)
    return z.to(device), y


@torch.no_grad()
def sample_grid(G_eval, z, y, path: Path, nrow: int):
    from gandist.reporting import save_grid

    was = G_eval.training
    G_eval.eval()
    images = torch.cat([G_eval(z[i:i + 256], None if y is None else y[i:i + 256]) for i in range(0, len(z), 256)])
    G_eval.train(was)
    save_grid(images, path, nrow)


def export_final(run_dir: Path, G_raw, D_raw, ema):
    from safetensors.torch import save_file

    out = run_dir / "final"
    out.mkdir(parents=True, exist_ok=True)
    models = {"generator": G_raw, "discriminator": D_raw}
    if ema is not None:
        models["generator_ema"] = ema.model
    for name, m in models.items():
        sd = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
              for k, v in m.state_dict().items()}
        tmp = out / f".{name}.safetensors.tmp"
        save_file(sd, str(tmp))
        tmp.replace(out / f"{name}.safetensors")


class StopFlag:
    """SIGTERM / SIGUSR1 (SLURM preemption, time limit) set a flag; ranks agree on it at step boundaries."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, self._set)

    def _set(self, signum, frame):
        self.signum = signum

    def agreed(self, device) -> int:
        """The signal some rank received (the highest number if several), else 0; the same on every rank."""
        t = torch.tensor([float(self.signum)], dtype=torch.float64, device=device)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())


# -- main -----------------------------------------------------------------------------------------

def restore(cfg, acc, path: Path, models, stepper, data) -> tuple[int, str]:
    """Collective: load checkpoint `path` into the run; returns its step and a note for the start line."""
    run_dir = Path(cfg.output.dir)
    try:
        state = checkpoint.load(acc, path, identity(cfg), {"generator": models.G_raw, "discriminator": models.D_raw},
                                models.ema)
    except checkpoint.CheckpointError as e:
        older = [p for p in checkpoint.complete(run_dir) if p.name < path.name]
        if cfg.train.resume == "auto" and older:
            raise checkpoint.CheckpointError(f"{e}. To continue from the checkpoint before it instead: "
                                             f"train.resume={older[-1]} train.overwrite=true") from None
        raise
    # Hyperparameters are the config's, not the checkpoint's: the lrs are set every step (Stepper.set_lr).
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            if "betas" in group:
                group["betas"] = (cfg.optim.beta1, cfg.optim.beta2)
    for k, v in state.get("counters", {}).items():
        setattr(stepper.counters, k, v)
    data.load_state_dict(state.get("data", {}))
    note = f", resumed from {path}"
    if state.get("world_size", acc.num_processes) != acc.num_processes:
        note += f" (written by {state['world_size']} processes)"
    return state["step"], note


def weights_finite(models) -> bool:
    """G, D (parameters and buffers) and the EMA hold only finite numbers: worth a checkpoint."""
    mods = [models.G_raw, models.D_raw] + ([models.ema.model] if models.ema is not None else [])
    return all(bool(torch.isfinite(t).all()) for m in mods for t in [*m.parameters(), *m.buffers()]
               if t.is_floating_point())


def run(cfg) -> int:
    from gandist.data.source import make_source
    from gandist.ema import EMA
    from gandist.nets.layers import convert_sync_batchnorm
    from gandist.reporting import Reporter, plot_metrics
    from gandist.metrics import Evaluator
    from gandist.training_loop import Models, Stepper

    stop = StopFlag()
    acc = make_accelerator(cfg)
    world, rank = acc.num_processes, acc.process_index
    config.check_world_size(cfg, world)
    run_dir = Path(cfg.output.dir)
    resume_from = decide_resume(cfg, run_dir)
    if acc.is_main_process:
        prepare_run_dir(cfg, run_dir, resume_from)
    acc.wait_for_everyone()

    if cfg.train.fp64:
        torch.set_default_dtype(torch.float64)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank and world size
    G, D = nets.build(cfg)
    ema = EMA(G, cfg.optim.ema, cfg.optim.ema_start) if cfg.optim.ema > 0 else None  # before sync BN
    if cfg.model.sync_bn or (cfg.model.sync_bn is None and world > 1):
        G = convert_sync_batchnorm(G, acc.device.type)
        D = convert_sync_batchnorm(D, acc.device.type)
    opt_g = make_optimizer(cfg.optim, G.parameters(), cfg.optim.lr_g)
    opt_d = make_optimizer(cfg.optim, D.parameters(), cfg.optim.lr_d)
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    G_raw, D_raw = acc.unwrap_model(G), acc.unwrap_model(D)
    if ema is not None:
        ema.model.to(acc.device)
    models = Models(G, D, G_raw, D_raw, opt_g, opt_d, ema)

    data = make_source(cfg, rank, world, acc.device)
    draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, acc.device)
    stepper = Stepper(cfg, acc, models, data, draws)

    start, note = restore(cfg, acc, resume_from, models, stepper, data) if resume_from else (0, "")
    if acc.is_main_process:
        truncate_metrics(run_dir, start)

    write_run_files(cfg, acc, run_dir)
    if cfg.log.trackers:
        acc.init_trackers(Path(cfg.output.dir).name, config=config.to_dict(cfg))
    report = Reporter(cfg, acc, run_dir, start)
    report.print(f"gandist {__version__}: {cfg.variant} on {world} process(es), {acc.device.type}, "
                 f"global batch {cfg.train.batch_size}, steps {start}->{cfg.train.steps}, run dir {run_dir}{note}")
    z_fixed, y_fixed, nrow = fixed_inputs(cfg, acc.device)
    # Built before the first step so a missing Inception weights file stops the run at once.
    evaluator = Evaluator(cfg, acc.device, rank, world).prepare() if cfg.eval.metrics else None

    def G_for_use(step):
        """What samples, evaluation and the export use: the EMA generator (its BatchNorm statistics
        recomputed for its current weights) when there is one, else G."""
        if ema is None:
            return G_raw
        if not ema.calibrated:
            ema.calibrate(*ema_inputs(cfg, step, acc.device))
        return ema.model

    def save_checkpoint(step):
        # Never replace good checkpoints with weights that have blown up (pruning would drop the good ones).
        if sum_over_ranks(float(not weights_finite(models)), acc.device) > 0:
            report.print(f"[yellow]step {step}: the weights are not finite; no checkpoint saved "
                         f"(the last good one is {checkpoint.latest(run_dir)})")
            return None
        state = {"identity": identity(cfg), "counters": vars(stepper.counters), "data": data.state_dict(),
                 "world_size": world}
        if acc.is_main_process:  # the one rank that stores the EMA generator, with statistics for its weights
            G_for_use(step)
        path = checkpoint.save(acc, run_dir, step, state, ema, cfg.checkpoint.keep)
        report.print(f"checkpoint {path}")
        return path

    local_batch = cfg.train.batch_size // world
    t_last, n_last = time.perf_counter(), start
    exit_code = 0
    for step in range(start, cfg.train.steps):
        stats = stepper.round(step)
        done = step + 1
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            now = time.perf_counter()
            local_rate = (done - n_last) * cfg.optim.n_critic * local_batch / max(now - t_last, 1e-9)
            stats["images_per_sec"] = sum_over_ranks(local_rate, acc.device)
            stats["bad_steps"] = stepper.counters.bad_total
            stats["data_skipped"] = sum_over_ranks(data.skipped, acc.device)
            if cfg.train.mixed_precision == "fp16":
                stats["skipped_steps"] = stepper.counters.skipped_by_scaler
            report.log(done, stats)
            t_last, n_last = now, done
        report.advance(done, stats)
        if acc.is_main_process and (done % cfg.train.sample_every == 0 or done == cfg.train.steps):
            sample_grid(G_for_use(done), z_fixed, y_fixed, run_dir / "samples" / f"step_{done:06d}.png",
                        nrow)
        if evaluator and ((cfg.eval.every and done % cfg.eval.every == 0) or done == cfg.train.steps):
            scores = evaluator(G_for_use(done))  # every rank takes part; same scores everywhere
            report.log(done, scores)
            report.print(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        stopping = stop.agreed(acc.device) if done < cfg.train.steps else 0  # all ranks, same answer
        if done % cfg.checkpoint.every == 0 or done == cfg.train.steps or stopping:
            path = save_checkpoint(done)
        if stopping:
            saved = f"checkpoint {path} saved at step {done}" if path else f"last checkpoint {checkpoint.latest(run_dir)}"
            report.print(f"{signal.Signals(stopping).name} received: {saved}; exiting with {EXIT_REQUEUE} so the "
                         f"job can be requeued")
            if acc.is_main_process:
                checkpoint.write_json_atomic(run_dir / PREEMPTED, {"step": done, "signal": stopping,
                                                                   "checkpoint": str(path) if path else None})
            exit_code = EXIT_REQUEUE
            break

    if exit_code == 0:
        if acc.is_main_process:
            G_for_use(cfg.train.steps)
            export_final(run_dir, G_raw, D_raw, ema)
            plot_metrics(run_dir)
        report.print(f"done: {run_dir}/final, samples in {run_dir}/samples")
    report.close()
    acc.end_training()
    return exit_code


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def lost_peer(e: BaseException) -> bool:
    """Is this the error a collective raises when another rank is gone (gloo and NCCL wording)?"""
    if isinstance(e, torch.distributed.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and torch.distributed.is_initialized() and any(
        s in text for s in ("Connection reset by peer", "Connection closed by peer", "Timed out waiting",
                            "Broken pipe", "NCCL communicator was aborted", "Watchdog caught collective"))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = None
    try:
        cfg = config.load(args.config, args.overrides)
        return run(cfg)
    except (ConfigError, checkpoint.CheckpointError, MetricError) as e:
        print(f"gandist: error ({where()}): {e}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteLoss as e:
        print(f"gandist: error ({where()}): training diverged: {e}. Stopped; the last good checkpoint is "
              f"{checkpoint.latest(cfg.output.dir)} (try a lower learning rate from there, e.g. with "
              f"train.resume=PATH)", file=sys.stderr)
        return EXIT_DIVERGED
    except Exception as e:
        if lost_peer(e):  # the usual way a run ends when another rank dies: a short message, no traceback
            print(f"gandist: error ({where()}): lost contact with another process of the run; it died, hung "
                  f"or was cut off (a hung peer is given up on after train.timeout_s={cfg.train.timeout_s} s); "
                  f"see the other ranks' logs. {type(e).__name__}: {first_line(e)}", file=sys.stderr)
            return EXIT_ERROR
        traceback.print_exc()
        print(f"gandist: {type(e).__name__} ({where()}): {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
