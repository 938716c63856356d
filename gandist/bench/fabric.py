"""Network namespaces as the nodes of an emulated cluster, joined through a bridge by rate-capped veth links.

    with Fabric(nodes=2, tag="a1b2") as f:       # root only; everything it makes is named gd<tag>...
        f.cap(1.0)                               # every link capped at 1 Gb/s both ways (tc tbf); None: uncapped
        f.run(0, ["torchrun", ...])              # a process inside node 0, in a session of its own

Layout: a hub namespace holds a bridge at HUB_ADDR (where the rendezvous store runs) and one veth end per
node; node i's namespace holds the other end at NODE_NET.(i+1) and its loopback.  Nothing is made in, or
routed to, the host's own namespace, so the traffic stays between these namespaces.  The token bucket caps
each direction at the link's rate; this kernel has no netem, so no latency is added beyond the veth's own.
Teardown (close(), also on an exception) kills the processes it started and deletes its namespaces, which
deletes their links and qdiscs with them.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

PREFIX = "gd"
NODE_NET = "10.77.0"
HUB_ADDR = f"{NODE_NET}.254"


class FabricError(Exception):
    """What the user can fix: not root, no ip/tc, a bad tag."""


def ip(*args: str) -> str:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def namespaces(prefix: str) -> list[str]:
    """The network namespaces whose name starts with prefix (`ip netns list`)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.split() and line.split()[0].startswith(prefix)]


def check_can_build() -> None:
    if os.geteuid() != 0:
        raise FabricError("the emulated cluster needs root: it makes network namespaces, veth links and tc qdiscs "
                          "(run it as root, e.g. sudo -E .venv/bin/python -m gandist.bench cluster ...)")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        raise FabricError(f"the emulated cluster needs {' and '.join(missing)} (iproute2) on PATH")


def tbf(rate_gbit: float) -> list[str]:
    """tc tbf arguments for a link of rate_gbit: a bucket of 1 ms of traffic (at least 32 kB, so a full-size
    segment always fits) and room for 100 ms of queue before it drops."""
    rate = rate_gbit * 1e9 / 8  # bytes/s
    return ["rate", f"{int(rate_gbit * 1e9)}bit", "burst", str(max(32 * 1024, int(rate / 1000))),
            "latency", "100ms"]


class Fabric:
    def __init__(self, nodes: int, tag: str):
        if not re.fullmatch(r"[a-z0-9]{1,8}", tag):
            raise FabricError(f"--tag {tag!r}: 1 to 8 lower-case letters or digits (it names the namespaces)")
        self.nodes, self.prefix = nodes, f"{PREFIX}{tag}"
        self.hub = f"{self.prefix}-hub"
        self.node_ns = [f"{self.prefix}-n{i}" for i in range(nodes)]
        self.node_if = [f"{self.prefix}a{i}" for i in range(nodes)]  # inside node i (<= 15 characters)
        self.hub_if = [f"{self.prefix}b{i}" for i in range(nodes)]  # its peer on the hub's bridge
        self.procs: list[subprocess.Popen] = []

    def addr(self, i: int) -> str:
        return f"{NODE_NET}.{i + 1}"

    def __enter__(self):
        check_can_build()
        if namespaces(self.prefix):
            raise FabricError(f"namespaces named {self.prefix}-* exist already (another emulated cluster with this "
                              f"tag?): pick another --tag, or delete them with `ip netns del`")
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def build(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "set", "lo", "up")
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "addr", "add", f"{HUB_ADDR}/24", "dev", "br0")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.node_ns):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            # both ends made directly in their namespaces: nothing passes through the host's
            ip("link", "add", self.node_if[i], "netns", ns, "type", "veth", "peer", "name", self.hub_if[i],
               "netns", self.hub)
            ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", self.node_if[i])
            ip("-n", ns, "link", "set", self.node_if[i], "up")
            ip("-n", self.hub, "link", "set", self.hub_if[i], "master", "br0")
            ip("-n", self.hub, "link", "set", self.hub_if[i], "up")

    def cap(self, gbit: float | None) -> None:
        """Every link at gbit each way (a tbf on both veth ends); None: no qdisc, the veth's own speed."""
        for i in range(self.nodes):
            for ns, dev in ((self.node_ns[i], self.node_if[i]), (self.hub, self.hub_if[i])):
                subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)
                if gbit is not None:
                    out = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", *tbf(gbit)],
                                         capture_output=True, text=True)
                    if out.returncode:
                        raise RuntimeError(f"tc tbf on {ns}/{dev}: {out.stderr.strip()}")

    def run(self, where: str | int, cmd: list[str], **kw) -> subprocess.Popen:
        """cmd inside node `where` (an index) or the hub ("hub"), in a session of its own (killed whole)."""
        ns = self.hub if where == "hub" else self.node_ns[where]
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 5.0) -> None:
        """SIGTERM to the process's session, SIGKILL after grace seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.procs = [q for q in self.procs if q is not p]

    def close(self) -> None:
        # a second Ctrl-C or SIGTERM waits until the teardown is done instead of cutting it short
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for p in list(self.procs):
                self.stop(p, grace=2.0)
            for ns in namespaces(self.prefix):  # only ever this fabric's own
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
