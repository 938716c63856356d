"""python -m gandist.bench cluster: the emulated cluster (network namespaces joined by tc-capped veth links)
runs a config from one command, really caps its links, says clearly when it is not root, and leaves nothing
behind after an interrupt.  Building namespaces needs root: those tests are skipped, saying so, without it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gandist.bench.__main__ import main
from gandist.bench.fabric import Fabric, namespaces

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "data.synthetic_size=256"]
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the emulated cluster makes network namespaces: needs root")


def cluster(tag: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gandist.bench", "cluster", "--tag", tag, *args, *TINY],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def leftovers(tag: str, out: Path | None = None) -> list[str]:
    """Namespaces and processes of this tag's cluster still there: agents, and workers writing into out."""
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return namespaces(f"gd{tag}") + [p for p in procs if f"--rdzv-id={tag}-" in p or (out and str(out) in p)]


@needs_root
def test_short_run_from_one_command():
    tag = f"r{os.getpid() % 100000}"
    p = cluster(tag, "--nodes", "2", "--link-gbit", "1", "--steps", "20", "--log-every", "10", "--no-model")
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    figures = json.loads(out.strip().splitlines()[-1])
    assert [(r["nodes"], r["link_gbit"]) for r in figures["runs"]] == [(1, None), (2, None), (2, 1.0)]
    assert all(r["images_per_s"] > 0 and r["efficiency"] > 0 for r in figures["runs"])
    assert "| 2 | 1 (" in out  # the table's capped row, with its GPU-equivalent rate
    assert leftovers(tag) == []


@needs_root
def test_links_are_capped():
    """8 MB from node 0 to node 1 through a 0.1 Gb/s link can't take less than its 0.67 s (less one bucket);
    a loaded machine only makes it slower, so the bound holds under load."""
    tag = f"c{os.getpid() % 100000}"
    size, gbit = 8 * 2 ** 20, 0.1
    recv = ("import socket,time;s=socket.create_server(('10.77.0.2',5999));c,_=s.accept();n=0;t=None\n"
            "while True:\n b=c.recv(1<<20)\n if not b: break\n t=t or time.monotonic();n+=len(b)\n"
            "print(n, time.monotonic()-t)")
    send = (f"import socket,time\nfor _ in range(100):\n try: c=socket.create_connection(('10.77.0.2',5999)); break\n"
            f" except OSError: time.sleep(0.1)\nc.sendall(bytes({size}));c.close()")
    with Fabric(2, tag) as fab:
        fab.cap(gbit)
        r = fab.run(1, [sys.executable, "-c", recv], stdout=subprocess.PIPE, text=True)
        s = fab.run(0, [sys.executable, "-c", send])
        assert s.wait(120) == 0
        got, seconds = r.communicate(timeout=120)[0].split()
    assert int(got) == size
    assert float(seconds) >= 0.8 * size * 8 / (gbit * 1e9), seconds
    assert namespaces(f"gd{tag}") == []


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nothing_left_after_an_interrupt(sig, tmp_path):
    tag = f"i{os.getpid() % 10000}{sig.value}"
    out = tmp_path / "runs"
    p = cluster(tag, "--nodes", "2", "--steps", "100000", "--log-every", "10", "--no-model", "--out", str(out))
    try:
        end = time.monotonic() + 120
        # interrupted once its nodes are built, while its first run starts in them
        while len(namespaces(f"gd{tag}")) < 3:
            assert p.poll() is None and time.monotonic() < end, "no emulated cluster built within 120 s"
            time.sleep(0.2)
        time.sleep(5)
    finally:
        p.send_signal(sig)  # also when the wait failed: the command cleans up after itself
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    assert leftovers(tag, out) == []


def test_says_it_needs_root(monkeypatch, capsys):
    """Without root it stops before reading or making anything, saying why (in-process, as a non-root uid)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["cluster", "--tag", "n1", "--steps", "20"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "Traceback" not in err
    assert namespaces("gdn1") == []
