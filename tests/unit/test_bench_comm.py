"""python -m gandist.bench comm: its byte counts (by hand, and against the collectives a 2-rank run really
makes), the ring and cluster model, the efficiency threshold, and the command end to end in-process."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.testing._internal.distributed.fake_pg import FakeStore

from gandist import config, nets
from gandist.backends.ddp import make_accelerator
from gandist.bench import cluster, comm
from gandist.bench.__main__ import main
from gandist.bench.timing import DeviceFeed
from gandist.draws import Draws
from gandist.nets.layers import convert_sync_batchnorm
from gandist.training.step import Models, Stepper
from tests.conftest import REPO, TINY

QUICKSTART = REPO / "configs" / "quickstart.yaml"
# TINY's DCGAN at 32 px, counted by hand from gandist/nets/dcgan.py (z 16, widths 8, 3 channels):
# G: ConvT 16->32 4x4 no bias 8192, BN32 64, ConvT 32->16 8192, BN16 32, ConvT 16->8 2048, BN8 16, ConvT 8->3 387
G_PARAMS = 8192 + 64 + 8192 + 32 + 2048 + 16 + 387
# D: Conv 3->8 4x4 392, Conv 8->16 no bias 2048, BN16 32, Conv 16->32 8192, BN32 64, head Conv 32->1 4x4 513
D_PARAMS = 392 + 2048 + 32 + 8192 + 64 + 513


def examine(tmp_path, *overrides, world=2):
    args = argparse.Namespace(device="cpu", overrides=[*TINY, f"output.dir={tmp_path}", *overrides])
    return comm.examine(QUICKSTART, args, world, given_ms=1.0)


def test_a_round_counts_what_a_hand_count_of_the_nets_and_steps_gives(tmp_path):
    e = examine(tmp_path, "optim.n_critic=2")
    r = e["round"]
    assert e["batch"] == 4  # the global 8 over 2 GPUs
    assert (sum(r.g_param_bytes), sum(r.d_param_bytes)) == (4 * G_PARAMS, 4 * D_PARAMS)  # fp32
    # DDP reduces D once a D step and G once a G step; the G step's D (unwrapped, frozen) adds nothing.
    assert (r.d_reductions, r.g_reductions) == (2, 1)
    # G's BatchNorm: a no-grad forward in each D step, one in the G step, whose backward is the only one.
    # D's: real and fake forwards in each D step plus the G step's, and a backward after each.
    assert [(b.net, b.channels, b.forwards, b.backwards) for b in r.bn] == [
        ("G", 32, 3, 1), ("G", 16, 3, 1), ("G", 8, 3, 1), ("D", 16, 5, 5), ("D", 32, 5, 5)]
    assert {"loss_d", "loss_g"} <= set(r.stat_keys)
    colls = {c.what: c for c in e["colls"]}
    assert (colls["D grads"].nbytes, colls["D grads"].per_round) == (4 * D_PARAMS, 2)  # one bucket: under 1 MiB
    assert (colls["G grads"].nbytes, colls["G grads"].per_round) == (4 * G_PARAMS, 1)
    gather = colls["BN G.net.1 fwd"]
    assert (gather.kind, gather.nbytes, gather.per_round) == ("all_gather", (2 * 32 + 1) * 4, 3)
    assert (colls["BN D.features.6 bwd"].nbytes, colls["BN D.features.6 bwd"].per_round) == (2 * 32 * 4, 5)
    # TINY logs every step: D's and G's keys and the Reporter's two rates in one all-reduce, the counters in another
    # (with the health checks' r_t and d_fake_caught, and the diversity measured before each log step)
    assert sorted(r.stat_keys) == ["d_fake", "d_fake_caught", "d_real", "diversity", "loss_d", "loss_d_adv", "loss_g",
                                   "r_t"]
    assert (colls["logged values"].nbytes, colls["logged values"].per_round) == (8 * (8 + 2), 1)
    assert colls["counters and verdict"].nbytes == 8 * comm.COUNTERS


def test_g_reuses_the_d_steps_fakes_with_one_d_step_a_round(tmp_path):
    r = examine(tmp_path)["round"]  # n_critic 1, g_steps 1: perf.reuse_fakes
    assert [(b.net, b.forwards, b.backwards) for b in r.bn] == [("G", 1, 1)] * 3 + [("D", 3, 3)] * 2
    assert (r.d_reductions, r.g_reductions) == (1, 1)


def test_no_batchnorm_traffic_where_the_config_turns_synchronisation_off(tmp_path):
    kinds = {c.what.split()[0] for c in examine(tmp_path, "model.sync_bn=false")["colls"]}
    assert kinds == {"D", "G", "logged", "counters"}


def test_gradient_penalty_critic_is_reduced_once_a_d_step_and_has_no_batchnorm(tmp_path):
    r = examine(tmp_path, "variant=wgan_gp")["round"]
    assert (r.d_reductions, r.g_reductions) == (5, 1)  # the penalty's double backward is part of the one backward
    assert all(b.net == "G" and (b.forwards, b.backwards) == (6, 1) for b in r.bn)


@pytest.mark.parametrize("variant", ["dcgan", "wgan_gp"])
def test_the_counts_are_the_collectives_of_a_two_rank_run(tmp_path, monkeypatch, variant):
    """In a fake 2-rank process group (collectives return at once), the round with DDP and gandist's
    GlobalBatchNorm makes exactly the collectives the hooks predict."""
    cfg = config.load(QUICKSTART, [*TINY, f"output.dir={tmp_path}", f"variant={variant}", "optim.n_critic=2"])
    acc = make_accelerator(cfg)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        torch.manual_seed(0)
        G, D = (convert_sync_batchnorm(m, "cpu") for m in nets.build(cfg))
        reduced = {"G": [], "D": []}

        def count(net):
            def hook(state, bucket):
                reduced[net].append(bucket.buffer().numel() * bucket.buffer().element_size())
                fut = torch.futures.Future()
                fut.set_result(bucket.buffer())
                return fut
            return hook

        wrapped = {}
        for net, m in (("G", G), ("D", D)):
            wrapped[net] = DDP(m, broadcast_buffers=False)
            wrapped[net].register_comm_hook(None, count(net))
        models = Models(wrapped["G"], wrapped["D"], G, D, torch.optim.Adam(G.parameters()),
                        torch.optim.Adam(D.parameters()))
        stepper = Stepper(cfg, acc, models, DeviceFeed(comm.premade(cfg, acc.device)),
                          Draws(0, cfg.train.batch_size, 0, 1, acc.device))
        seen, all_reduce = {torch.float32: [], torch.float64: []}, dist.all_reduce

        def recording(t, *a, **k):  # float32: GlobalBatchNorm's; float64: the logged values and counters
            seen[t.dtype].append(t.numel())
            return all_reduce(t, *a, **k)

        monkeypatch.setattr(dist, "all_reduce", recording)
        r = comm.count_round(stepper)
        bn_values, in_round = seen[torch.float32], list(seen[torch.float64])
        stepper.tally.sync()  # a log step, as gandist.train runs it
        stepper.tally.means({k: 0.0 for k in comm.REPORTER_SUMS})
    finally:
        dist.destroy_process_group()
    assert in_round == []  # nothing logged is reduced inside a round
    assert sorted(seen[torch.float64]) == sorted([comm.COUNTERS, len(r.stat_keys) + len(comm.REPORTER_SUMS)])
    assert sum(reduced["D"]) == r.d_reductions * sum(r.d_param_bytes) > 0
    assert sum(reduced["G"]) == r.g_reductions * sum(r.g_param_bytes) > 0
    assert len(bn_values) == 2 * sum(b.forwards + b.backwards for b in r.bn)  # C+1 and C each time
    assert sum(bn_values) == comm.gloo_bn_values(r) > 0


def test_ring_formulas():
    assert cluster.ring_allreduce(1000, 1) == 0
    assert cluster.ring_allreduce(1000, 2) == 1000
    assert cluster.ring_allreduce(1000, 8) == 1750
    assert cluster.ring_allgather(10, 8) == 70


def test_cluster_times_a_collective_over_the_nodes_links():
    cl = cluster.Cluster(nodes=8, gpus=8, link_gbps=100, latency_us=0)
    ar = cluster.Collective("x", "all_reduce", 10 ** 6, 1)
    assert cl.seconds(ar) == pytest.approx(1.75e6 / 12.5e9)  # 2(N-1)/N x S at 12.5 GB/s
    ag = cluster.Collective("x", "all_gather", 100, 1)
    assert cl.seconds(ag) == pytest.approx(7 * 8 * 100 / 12.5e9)  # the other nodes' 8 GPUs' shares come in
    assert replace(cl, links_per_node=8).seconds(ar) == pytest.approx(cl.seconds(ar) / 8)
    assert replace(cl, latency_us=30).seconds(ar) == pytest.approx(cl.seconds(ar) + 30e-6)
    assert cluster.Cluster(1, 1, 100).seconds(ar) == 0  # one GPU: nothing to talk to


def test_buckets_follow_ddp_first_small_then_capped():
    mib = 2 ** 20
    assert comm.buckets([10 * mib, mib // 2, mib // 2 + 1]) == [mib + 1, 10 * mib]  # reverse order; first >= 1 MiB
    assert comm.buckets([30 * mib, 2 * mib]) == [2 * mib, 30 * mib]
    assert comm.buckets([]) == []


def test_efficiency_and_where_it_falls_below_the_target():
    assert cluster.efficiency(9.0, 1.0, 0.0, overlap=False) == pytest.approx(0.9)
    assert cluster.efficiency(9.0, 5.0, 1.0, overlap=True) == pytest.approx(0.9)  # gradients hidden, BN not
    assert cluster.efficiency(9.0, 10.0, 0.0, overlap=True) == pytest.approx(0.9)  # only what exceeds compute shows
    colls = [cluster.Collective("g", "all_reduce", 10 ** 8, 1, overlaps=True),
             cluster.Collective("bn", "all_gather", 4000, 3)]
    cl = cluster.Cluster(8, 8, 100, latency_us=30)
    compute = 0.2
    n = cluster.nodes_below(colls, compute, cl, 0.9, overlap=False, max_nodes=1024)
    assert n is not None and n > 1

    def eff(**change) -> float:
        return cluster.efficiency(compute, *cluster.round_seconds(colls, replace(cl, **change)), False)

    assert eff(nodes=n) < 0.9 <= eff(nodes=n - 1)
    assert cluster.nodes_below(colls, 1e6, cl, 0.9, False, 16) is None
    gbps = cluster.link_for(colls, compute, cl, 0.9)
    assert eff(link_gbps=gbps) == pytest.approx(0.9) and eff(link_gbps=0.99 * gbps) < 0.9
    assert cluster.link_for(colls, 1e-4, cl, 0.9) is None  # 4 collectives' latency alone is over 10% of 0.1 ms


def test_the_command_prints_tables_and_ends_with_json(capsys):
    argv = ["comm", "--configs", "quickstart", "--nodes", "2", "--gpus-per-node", "4", "--steps", "1",
            "--warmup", "0", "--device", "cpu", *TINY]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("| quickstart | dcgan | 1 | 1 D + 1 G |") for line in out)
    figures = json.loads(out[-1])
    (q,) = figures["configs"]
    assert (q["d_grad_bytes"], q["g_grad_bytes"], q["batch_per_gpu"]) == (4 * D_PARAMS, 4 * G_PARAMS, 1)
    assert [x["gbps"] for x in q["links"]] == [100, 400] and q["compute_source"].startswith("cpu")
    assert q["links"][1]["efficiency"] >= q["links"][0]["efficiency"]  # a faster link never costs efficiency


def test_usage_errors_are_one_line(capsys):
    assert main(["comm", "--configs", "no_such_config"]) == 2
    assert main(["comm", "--configs", "quickstart", "--compute-ms", "fast"]) == 2
    assert "--compute-ms" in capsys.readouterr().err


def test_the_dist_levers_change_what_the_model_counts(tmp_path):
    """bf16 halves every gradient bucket; PowerSGD (rank 1) sends each matrix that compresses 2x or more as
    rows + columns values, the rest whole (TINY's D by hand: its three convs compress, the 1 x 512 head and
    the 1-D tensors go whole); BatchNorm per node puts no bytes on the link."""
    exact = {c.what: c.nbytes for c in examine(tmp_path, "dist.comm_hook=none")["colls"]}
    half = {c.what: c.nbytes for c in examine(tmp_path, "dist.comm_hook=bf16")["colls"]}
    assert half["D grads"] == exact["D grads"] // 2 == 2 * D_PARAMS
    low = {c.what: c.nbytes for c in examine(tmp_path, "dist.comm_hook=powersgd", "dist.powersgd_rank=1")["colls"]}
    assert (low["D grads whole"], low["D grads P"], low["D grads Q"]) == (
        4 * (8 + 16 + 16 + 32 + 32 + 512 + 1), 4 * (8 + 16 + 32), 4 * (48 + 128 + 256))
    node = examine(tmp_path, "dist.bn_scope=node")["colls"]
    cl = cluster.Cluster(8, 8, 100.0)
    bn = [c for c in node if c.what.startswith("BN")]
    assert bn and all(c.kind == "node_local" and cl.wire(c) == 0 for c in bn)
    assert sum(c.per_round for c in bn) == sum(b.forwards + b.backwards for b in examine(tmp_path)["round"].bn)


def test_a_per_process_batch_is_counted_at_that_batch(tmp_path):
    """dist.batch_per_process: the model counts a GPU's round at that batch, whatever train.batch_size says."""
    e = examine(tmp_path, "dist.batch_per_process=3", "train.batch_size=64", world=4)
    assert e["batch"] == 3


def test_the_emulated_clusters_lever_batch_and_measured_latency():
    from gandist.bench.emulated import measured_latency_us, per_process
    assert per_process("dist.comm_hook=bf16 dist.batch_per_process=64", 32) == 64
    assert per_process("dist.comm_hook=bf16", 32) == 32
    colls = [cluster.Collective("bn", "all_reduce", 64, 10), cluster.Collective("grad", "all_reduce", 10 ** 6, 2,
                                                                                   overlaps=True)]
    # 12 collectives a round; the uncapped round is 6 ms longer than one node's: 500 us each
    assert measured_latency_us(colls, {"round_ms": 100.0}, {"round_ms": 106.0}) == pytest.approx(500.0)
    assert measured_latency_us(colls, {"round_ms": 100.0}, {"round_ms": 90.0}) == 0.0
