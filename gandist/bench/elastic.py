"""python -m gandist.bench elastic: what losing a node and getting it back costs, on this machine.

Two "nodes" (launch/elastic.sh, one process each) join a rendezvous at a standalone store (launch/store.py)
on 127.0.0.1 and train the quickstart's tiny settings; one node is killed whole (agent and worker) at a
step, later started again.  Printed: seconds from the kill to the first step at world 1 and steps trained
again, then seconds from the node's start to the first step at world 2 and steps trained again, from the
run's own history.jsonl, with the rendezvous settings they were measured with (launch/elastic.sh's defaults
unless --rdzv-conf says otherwise).

With --stall KIND, rank --stall-rank's training loop stalls at that step instead (tests/inject/sitecustomize.py
on PYTHONPATH: the loop asleep, a blocking batch read, or a rank that never enters a log step's all-reduce),
and what is printed is seconds from the stall to its naming and to the first step at world 1, under
train.hang_timeout_s=--hang-timeout and launch/elastic.sh's other settings (its --shutdown-timeout 300
included).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gandist.bench import machine
from gandist.training.run_dir import last_logged, read_history

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "data.synthetic_size=256", "train.batch_size=8",
        "log.progress=false", "train.sample_every=100000", "train.log_every=5"]


def add_parser(sub):
    p = sub.add_parser("elastic", help="seconds and steps a lost node and a rejoin cost (two local 'nodes')")
    p.add_argument("--kill-at", type=int, default=120, help="step at which the second node is killed")
    p.add_argument("--checkpoint-every", type=int, default=50, help="checkpoint.every of the run")
    p.add_argument("--rdzv-conf", default="", help="rendezvous settings (GANDIST_RDZV_CONF); empty: the script's")
    p.add_argument("--port", type=int, default=29471, help="port of the rendezvous store")
    p.add_argument("--stall", choices=("sleep", "read", "collective"),
                   help="stall a rank's loop instead of killing a node (and do not restart it)")
    p.add_argument("--stall-rank", type=int, default=1, help="the rank that stalls (0: the node holding the store)")
    p.add_argument("--hang-timeout", type=float, default=30.0, help="train.hang_timeout_s with --stall")


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == p:
                    todo.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _kill(proc: subprocess.Popen):
    for pid in _tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(cond, seconds: float, what: str):
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"no {what} within {seconds:.0f} s")
        time.sleep(0.05)


def run(args) -> int:
    out = Path(tempfile.mkdtemp(prefix="gandist-bench-elastic-")) / "run"
    env = dict(os.environ, GANDIST_RDZV_ENDPOINT=f"127.0.0.1:{args.port}", GANDIST_RDZV_ID="bench",
               GANDIST_ELASTIC_NODES="1:2", GANDIST_PROCS_PER_NODE="1", OMP_NUM_THREADS="1")
    if args.rdzv_conf:
        env["GANDIST_RDZV_CONF"] = args.rdzv_conf
    cmd = ["bash", str(REPO / "launch/elastic.sh"), "--config", str(REPO / "configs/quickstart.yaml"), *TINY,
           f"output.dir={out}", "train.steps=100000", f"checkpoint.every={args.checkpoint_every}"]
    if args.stall:
        stalls = out.parent / "stalls"
        stalls.mkdir()
        env.update(GANDIST_TEST_STALL=str(stalls), PYTHONPATH=str(REPO / "tests" / "inject"))
        cmd.append(f"train.hang_timeout_s={args.hang_timeout:g}")
    store = subprocess.Popen([sys.executable, str(REPO / "launch/store.py"), "--host", "127.0.0.1",
                              "--port", str(args.port)], stdout=subprocess.DEVNULL)
    node = {}

    def start(name):
        with open(out.parent / f"{name}.log", "w") as log:
            node[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def sizes():
        return [s["world_size"] for s in read_history(out)]

    try:
        start("a"), start("b")
        _wait(lambda: sizes() == [2] and (last_logged(out) or (0,))[0] >= args.kill_at, 600,
              f"step {args.kill_at} at world 2")
        if args.stall:
            return _stalled(args, out, stalls, sizes)
        _kill(node["b"])
        killed = time.time()
        _wait(lambda: len(sizes()) >= 2, 600, "a start at world 1")
        lost = read_history(out)[1]
        start("b")
        back = time.time()
        _wait(lambda: len(sizes()) >= 3, 600, "a start at world 2")
        rejoin = read_history(out)[2]
    finally:
        for p in node.values():
            _kill(p)
        store.kill()
    print(f"# python -m gandist.bench elastic: two local nodes, launch/elastic.sh; {machine()}")
    print(f"rendezvous settings: {args.rdzv_conf or 'launch/elastic.sh defaults'}; checkpoint.every "
          f"{args.checkpoint_every}; node killed after step {args.kill_at}")
    print(f"node lost: first step at world {lost['world_size']} {lost['first_step'] - killed:.1f} s after the kill; "
          f"{lost['steps_replayed']} steps trained again (from {lost['resumed_from']})")
    print(f"node back: first step at world {rejoin['world_size']} {rejoin['first_step'] - back:.1f} s after its "
          f"start; {rejoin['steps_replayed']} steps trained again")
    print(json.dumps({"lost": lost, "rejoin": rejoin}))
    return 0


def _stalled(args, out: Path, stalls: Path, sizes) -> int:
    """Stall a rank now; print when it was named and when the run trained on at world 1."""
    (stalls / f"{args.stall}-{args.stall_rank}").write_text("{}")
    stalled = time.time()
    logs = [out.parent / f"{n}.log" for n in "ab"]
    named = f"rank {args.stall_rank} on "

    def naming() -> bool:
        return any(named in line and "stalled in phase" in line for f in logs for line in f.read_text().splitlines())

    _wait(naming, args.hang_timeout + 120, "naming of the stalled rank")
    t_named = time.time()
    _wait(lambda: len(sizes()) >= 2, 600, "a start at world 1")
    lost = read_history(out)[1]
    print(f"# python -m gandist.bench elastic --stall {args.stall}: two local nodes, launch/elastic.sh; {machine()}")
    print(f"rendezvous settings: {args.rdzv_conf or 'launch/elastic.sh defaults'}; checkpoint.every "
          f"{args.checkpoint_every}; train.hang_timeout_s {args.hang_timeout:g}; rank {args.stall_rank} stalled "
          f"after step {args.kill_at}")
    print(f"stalled rank named {t_named - stalled:.1f} s after the stall; first step at world {lost['world_size']} "
          f"{lost['first_step'] - stalled:.1f} s after it; {lost['steps_replayed']} steps trained again "
          f"(from {lost['resumed_from']})")
    print(json.dumps({"named_s": t_named - stalled, "lost": lost}))
    return 0
