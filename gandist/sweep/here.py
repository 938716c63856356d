"""A sweep's members run here, K at a time, each a `python -m gandist.train` process.  Each gets a session of
its own, so a terminal's Ctrl-C reaches the sweep alone, which passes each signal on once and waits: the
members checkpoint and stop as gandist-train does, and a re-run resumes them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from gandist.sweep.spec import Member, Spec

# gandist-train's exit statuses, in words
OUTCOMES = {0: "done", 1: "failed (error)", 2: "failed (bad input)", 3: "diverged", 75: "preempted (checkpoint saved)",
            130: "stopped by Ctrl-C (checkpoint saved)"}
POLL_S = 0.2


def command(spec: Spec, m: Member) -> list[str]:
    config, *overrides = m.args(spec)
    return [sys.executable, "-m", "gandist.train", "--config", config, *overrides]


def member_env(parallel: int) -> dict:
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        # torch takes every core per process by default: K members would fight over them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run(spec: Spec, members: list[Member], parallel: int, say) -> tuple[dict[str, int], int | None]:
    """Run `members`, `parallel` at a time: (each started member's exit status, the signal that stopped it or None)."""
    logs = spec.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = member_env(parallel)
    waiting, running, codes, stop = list(members), {}, {}, []

    def on_signal(signum, _frame):
        stop.append(signum)
        say(f"{signal.Signals(signum).name}: passing it to the {len(running)} running member(s); no more start")
        for _, p, _, _ in running.values():
            p.send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while waiting or running:
            while waiting and len(running) < parallel and not stop:
                m = waiting.pop(0)
                log = open(logs / f"{m.name}.log", "a", buffering=1)
                cmd = command(spec, m)
                log.write(f"=== gandist-sweep {time.strftime('%F %T')}: {' '.join(cmd)}\n")
                p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
                running[m.index] = (m, p, time.monotonic(), log)
                say(f"{m.name}: started (member {m.index}; log {log.name})")
            for index, (m, p, t0, log) in list(running.items()):
                if p.poll() is None:
                    continue
                log.close()
                del running[index]
                codes[m.name] = p.returncode
                say(f"{m.name}: {OUTCOMES.get(p.returncode, 'failed')} (exit {p.returncode}) after "
                    f"{time.monotonic() - t0:.0f} s")
            if waiting or running:
                time.sleep(POLL_S)
            if stop and not running:
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return codes, (stop[0] if stop else None)


def exit_status(codes: dict[str, int], stopped: int | None) -> int:
    """130 after Ctrl-C, 75 after SIGTERM, 1 when a member failed, else 0: a diverged member is a result."""
    if stopped is not None:
        return 130 if stopped == signal.SIGINT else 75
    return 1 if any(c not in (0, 3) for c in codes.values()) else 0
