"""gandist-check's verdicts from what the ranks report, with ranks described here (two nodes, a rank with another
gandist, two ranks on one GPU, a rank without the GPU the config asks for), its cost model of a round, and its
table: plain lines off a terminal, a rich table on one."""
from __future__ import annotations

import socket

import pytest
from rich.console import Console

from gandist import config
from gandist.bench.comm import Round
from gandist.check import collectives, ranks, rounds, syncbn
from gandist.check.report import FAIL, INFO, PASS, WARN, Row, finding, plain, show, summary
from tests.conftest import REPO, TINY

HOST = socket.gethostname()
SOFTWARE = {"torch": "2.14.1", "accelerate": "1.16.0", "deepspeed": "0.19.8", "gandist": "0.1.0",
            "commit": "721aee604c890dafbc09fda0843e879c6ef8cd48", "python": "3.11.7"}


def fact(rank, host="a", node=None, device="cpu", launched=1, gpu=None, gpus=0, **software):
    return {"rank": rank, "host": host, "where": f"rank {rank} on {host}", "node": node, "local_rank": 0,
            "launched_per_node": launched, "device": device, "gpu": gpu, "gpus": gpus, "name": "H100",
            "memory": 80 * 2 ** 30, "free": 79 * 2 ** 30, "driver": "550.54", "cuda": "12.4", "nccl": "2.21.5",
            "software": {**SOFTWARE, **software}}


def two_nodes(per_node=2, **kw):
    return [fact(n * per_node + i, host="ab"[n], node=str(n), launched=per_node, **kw)
            for n in range(2) for i in range(per_node)]


def test_a_rank_with_another_gandist_fails_the_software_check_naming_that_rank_and_host():
    facts = two_nodes()
    facts[3] = fact(3, host="b", node="1", launched=2, gandist="0.2.0", commit=None)
    row = ranks.software_row(facts)
    assert row.status == FAIL
    assert row.detail == "rank 3 on b: gandist 0.2.0 (rank 0: 0.1.0), commit unknown (rank 0: 721aee604c89)"
    same = ranks.software_row(two_nodes())
    assert same.status == PASS and "gandist 0.1.0" in same.detail and same.detail.endswith("on every rank")


def test_processes_per_node_are_checked_against_the_launch_and_the_job():
    assert ranks.layout_row(two_nodes(), None, None, False).status == PASS
    assert ranks.layout_row(two_nodes(), 2, 2, False).detail.endswith("as the job asked")
    short = two_nodes()[:3]  # node 1 launched 2 processes, one came
    row = ranks.layout_row(short, None, None, False)
    assert row.status == FAIL and row.detail == "node 1 (b): 1 process(es), expected 2 (ranks 2)"
    row = ranks.layout_row(two_nodes(), 3, 4, False)
    assert row.status == FAIL and "the job asked for 3 node(s); ranks came from 2" in row.detail
    assert "node 0 (a): 2 process(es), expected 4 (ranks 0-1)" in row.detail


def test_two_ranks_on_one_gpu_fail_and_unused_gpus_warn():
    facts = two_nodes(device="cuda", gpus=2)
    for f in facts:
        f["gpu"] = f"GPU-{f['rank']}"
    assert ranks.layout_row(facts, None, None, True).status == PASS
    facts[1]["gpu"] = facts[0]["gpu"]
    row = ranks.layout_row(facts, None, None, True)
    assert row.status == FAIL and "node 0 (a): ranks 0-1 share one GPU (GPU-0)" in row.detail
    spare = two_nodes(device="cuda", gpus=8)
    for f in spare:
        f["gpu"] = f"GPU-{f['rank']}"
    row = ranks.layout_row(spare, None, None, True)
    assert row.status == WARN and "node 1 (b): 2 of its 8 visible GPUs used" in row.detail


def test_a_rank_without_the_gpu_the_config_or_the_other_ranks_use_fails():
    facts = [fact(0, device="cuda", gpu="G0", gpus=1), fact(1, host="b")]
    row = ranks.layout_row(facts, None, None, True)
    assert row.status == FAIL and row.detail == "rank 1 on b: no GPU here, and train.device is cuda"
    row = ranks.layout_row(facts, None, None, False)  # train.device=auto: rank 1 would train on its CPU
    assert row.status == FAIL and row.detail == "rank 1 on b: no GPU here, and the other ranks train on one"
    assert ranks.layout_row([fact(0), fact(1, host="b")], None, None, False).status == PASS


def test_nodes_with_different_gpus_or_drivers_warn():
    facts = two_nodes(device="cuda", gpus=2)
    assert ranks.devices_row(facts).status == INFO
    facts[2]["driver"] = "535.1"  # node 1's
    row = ranks.devices_row(facts)
    assert row.status == WARN and "driver 535.1" in row.detail and "node 0 (a): ranks 0-1 on 2 x H100" in row.detail


def test_a_rank_with_another_config_is_named_with_the_keys_that_differ(tmp_path):
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}/a"])
    other = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}/b", "train.steps=7"])
    found = [{"where": "rank 0 on a", "value": config.to_dict(cfg)},
             {"where": "rank 1 on b", "value": config.to_dict(other)}]
    row = ranks.config_row(found)
    assert row.status == FAIL
    assert row.detail == (f"rank 1 on b: output.dir='{tmp_path}/b' (rank 0: '{tmp_path}/a'), "
                          f"train.steps=7 (rank 0: 1500)")
    assert ranks.config_row(found[:1]).status == PASS


def test_a_finding_is_the_value_or_the_line_that_names_this_rank():
    assert finding(lambda x: x + 1, 1) == {"where": f"rank 0 on {HOST}", "value": 2}

    def fails():
        raise OSError(30, "Read-only file system")
    assert finding(fails) == {"where": f"rank 0 on {HOST}", "error": "[Errno 30] Read-only file system"}

    def names_itself():  # the data errors end with the rank and host: said once
        raise ValueError(f"data.urls: none of the 2 shard(s) exist (rank 0 on {HOST})")
    assert finding(names_itself)["error"] == "data.urls: none of the 2 shard(s) exist"


def test_the_exit_status_is_1_exactly_when_a_check_failed():
    rows = [Row("ranks", "a", PASS, ""), Row("data", "b", WARN, ""), Row("training", "c", INFO, "")]
    assert summary(rows, 12.0) == (0, "gandist-check: all 2 checks passed, 1 warning(s), in 12.0 s")
    code, line = summary([*rows, Row("output.dir", "writable", FAIL, "rank 1 on b: ...")], 3.0)
    assert code == 1 and line == "gandist-check: 1 of 3 checks FAILED (output.dir writable), 1 warning(s), in 3.0 s"


ROWS = [Row("training", "rounds", PASS, "10 rounds"),
        Row("output.dir", "writable", FAIL, "rank 1 on b: cannot write in output.dir /x: [Errno 30] Read-only\n"
                                            "rank 2 on c: cannot write in output.dir /x: [Errno 30] Read-only"),
        Row("ranks", "hosts and devices", INFO, "node 0 (a): ranks 0-1 on cpu")]


def test_off_a_terminal_the_table_is_plain_lines_in_section_order(capsys):
    show(ROWS, "gandist-check: title", "gandist-check: 1 of 2 checks FAILED", Console(force_terminal=False))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "gandist-check: title" and lines[-1] == "gandist-check: 1 of 2 checks FAILED"
    assert lines[1] == "      ranks       hosts and devices  node 0 (a): ranks 0-1 on cpu"
    cannot = "cannot write in output.dir /x: [Errno 30] Read-only"
    assert lines[2] == f"FAIL  output.dir  writable           rank 1 on b: {cannot}"
    assert lines[3] == f"                                     rank 2 on c: {cannot}"
    assert lines[4].startswith("ok    training    rounds") and len(lines) == 6
    assert plain(ROWS).splitlines() == lines[1:-1]


def test_on_a_terminal_it_is_a_rich_table_and_brackets_stay_text():
    console = Console(force_terminal=True, width=200, record=True, color_system=None)
    show(ROWS, "gandist-check: [title]", "gandist-check: 1 of 2 checks FAILED", console)
    text = console.export_text()
    assert "✗" in text and "✓" in text and "┃" in text and "gandist-check: [title]" in text
    assert "[Errno 30] Read-only" in text  # not taken for rich markup


def test_the_rank_sets_measured_on_two_nodes():
    facts = two_nodes()
    assert collectives.groups(facts) == [(collectives.WORLD, [0, 1, 2, 3]), (collectives.WITHIN, [0, 1]),
                                         (collectives.WITHIN, [2, 3]), (collectives.BETWEEN, [0, 2])]
    assert collectives.groups(two_nodes(per_node=1)) == [(collectives.WORLD, [0, 1]), (collectives.BETWEEN, [0, 1])]
    assert collectives.groups([fact(0), fact(1)]) == [(collectives.WORLD, [0, 1])]


def test_a_round_costs_what_its_collectives_take_at_the_measured_latency_and_busbw(tmp_path):
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}", "train.log_every=10"])
    # one 4 MB D bucket, one 2 MB G bucket, 2 + 2 logged values and 7 counters every 10 rounds
    counted = Round([2_000_000], [4_000_000], 1, 1, [], ["loss_d", "loss_g"])
    facts = [fact(0), fact(1)]  # one node of 2 ranks: ring all-reduce of S bytes = S x 2(n-1)/n / busbw = S / busbw
    latency, busbw = 100e-6, 1e9
    measured = {collectives.WORLD: {"n": 2, "sizes": [[8, latency, 0.0], [2 ** 24, 0.02, busbw]]}}
    want = 2.2 * latency + (6e6 + 0.1 * 4 * 8 + 0.1 * 7 * 8) / busbw  # seconds: 6.22 ms
    row = collectives.round_row(counted, cfg, facts, measured, 0.1, "cpu")
    assert row.status == INFO and f"about {want * 1e3:.1f} ms without overlap, 6% of the 100 ms" in row.detail
    assert "all-reduces 6.00 MB in 2.2 collectives a round, as python -m gandist.bench comm counts;" in row.detail
    slow = collectives.round_row(counted, cfg, facts, measured, 0.02, "cpu")
    assert slow.status == WARN and "31% of the 20 ms" in slow.detail
    alone = collectives.round_row(counted, cfg, facts[:1], {}, 0.1, "cpu")
    assert alone.status == INFO and alone.detail == "1 process: a round communicates nothing"


def test_synchronised_batchnorm_in_one_process_equals_plain_batchnorm():
    import torch
    worst = syncbn.compare(torch.device("cpu"), 0)
    assert worst < 1e-6
    row = syncbn.row([{"where": "rank 0 on a", "value": worst}], "cpu", 1)
    assert row.status == PASS and row.detail.startswith("gandist's GlobalBatchNorm in 1 process")


@pytest.mark.parametrize("seconds, text", [(19.07, "19.1 s"), (125, "2 min 05 s"), (3 * 3600 + 61, "3 h 01 min")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert rounds.duration(seconds) == text
