"""A throwaway SLURM cluster on this one machine, for the tests (and for trying slurm/*.sh by hand).

One munged, one slurmctld and two slurmd (`slurmd -N node1`, `slurmd -N node2`), each slurmd on its
own port, every node at NodeAddr=127.0.0.1, partitions `debug` (the default) and `urgent`, whose jobs
preempt debug's (REQUEUE, with a grace time), all state, spool, sockets and logs in one directory,
nothing in /etc touched (munged gets its own key and socket; every command finds the cluster
through SLURM_CONF).  Needs Debian's slurm-wlm and munge packages and root (slurmd runs jobs as
their user).  By hand:

    python tests/slurm_cluster.py up /tmp/gandist-slurm     # prints the export SLURM_CONF=... line
    SLURM_CONF=/tmp/gandist-slurm/slurm.conf sbatch --nodes=2 slurm/train.sh configs/quickstart.yaml
    python tests/slurm_cluster.py down /tmp/gandist-slurm
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo")
INSTALL_HINT = ("install them as root with:  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                "slurm-wlm munge   (.ci/run does this)")
# A job in one of these states is over.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}


class ClusterError(RuntimeError):
    pass


def _which(name: str) -> str | None:
    # the daemons live in /usr/sbin, which a non-login PATH may lack
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def missing_programs() -> list[str]:
    return [n for n in DAEMONS + CLIENTS if _which(n) is None]


def why_unavailable() -> str | None:
    """None when a cluster can be started here, else the reason, in words."""
    missing = missing_programs()
    if missing:
        return f"SLURM/munge programs not found: {', '.join(missing)}; {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "starting slurmd needs root (it runs jobs as their submitting user); run the SLURM tests as root"
    return None


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"<{path}: {e}>"


def parse_record(line: str) -> dict:
    """`scontrol show job -o` / `show node -o` output: Key=value pairs, values may hold spaces."""
    out = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=(.*?)(?=\s+[A-Za-z][\w:/]*=|\s*$)", line.strip()):
        out[m.group(1)] = m.group(2)
    return out


class Cluster:
    def __init__(self, root: str | Path, nodes: tuple[str, ...] = ("node1", "node2"), cpus_per_node: int = 1,
                 requeue_delay_s: int = 5, extra_conf: str = ""):
        """extra_conf: slurm.conf lines appended (later lines win, e.g. more partitions, preemption)."""
        self.root = Path(root).resolve()
        self.extra_conf = extra_conf
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.requeue_delay_s = requeue_delay_s
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    # -- environment and commands ----------------------------------------------------------------

    def env(self, base: dict | None = None, **extra) -> dict:
        e = dict(os.environ if base is None else base)
        e["SLURM_CONF"] = str(self.conf)
        for k in list(e):  # a test run from inside some other job must not leak that job's identity
            if k.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_", "SRUN_", "SALLOC_")):
                del e[k]
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def cmd(self, *args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        exe = _which(args[0]) or args[0]
        p = subprocess.run([exe, *args[1:]], env=kw.pop("env", None) or self.env(), capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise ClusterError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def sbatch(self, *args: str, cwd: str | Path, env: dict | None = None) -> int:
        p = self.cmd("sbatch", "--parsable", *args, cwd=cwd, env=self.env(env))
        return int(p.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        p = self.cmd("scontrol", "show", "job", "-o", str(job_id))
        return parse_record(p.stdout.strip().splitlines()[0])

    def wait(self, job_id: int, states=FINAL_STATES, timeout: float = 300, poll: float = 1.0) -> dict:
        """Wait until the job's state is one of `states`; returns its record."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise ClusterError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f}s "
                                   f"(waiting for {sorted(states)}): {info}\n{self.logs()}")
            time.sleep(poll)

    def logs(self) -> str:
        parts = [f"--- {f.name}\n{_tail(f)}" for f in sorted((self.root / "log").glob("*.log"))]
        return "\n".join(parts)

    # -- life cycle -------------------------------------------------------------------------------

    def write_config(self):
        host = socket.gethostname().split(".")[0]
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        r = self.root
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus} RealMemory=2000 "
            f"State=UNKNOWN" for n, p in zip(self.nodes, node_ports))
        self.conf.write_text(f"""\
# written by tests/slurm_cluster.py: {len(self.nodes)} slurmd on this machine ({host}), all at 127.0.0.1
ClusterName=gandisttest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthType=auth/munge
AuthInfo=socket={r}/run/munge.socket,cred_expire={self.requeue_delay_s}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# look at pending jobs every 2 s (default 60/30 s): a requeued job starts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
FirstJobId={random.randint(1000, 90000)}
MinJobAge=3600
KillWait=10
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
{node_lines}
# Jobs in `urgent` preempt jobs in `debug`: SIGTERM to the job's steps, then GraceTime to end and
# be requeued before SLURM kills and requeues it itself
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=120
PartitionName=urgent Nodes={",".join(self.nodes)} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
{self.extra_conf}
""")

    def _spawn(self, name: str, *args: str):
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen([_which(args[0]), *args[1:]], env=self.env(), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def start(self, timeout: float = 60):
        why = why_unavailable()
        if why:
            raise ClusterError(why)
        for d in ("munge", "run", "state", "log", *(f"spool/{n}" for n in self.nodes)):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # munged: its key private, its socket's directory open (it refuses otherwise)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "run", 0o755)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.write_config()
        r = self.root
        try:
            self._spawn("munged", "munged", "-F", f"--key-file={key}", f"--socket={r}/run/munge.socket",
                        f"--pid-file={r}/run/munged.pid", f"--log-file={r}/log/munged.log",
                        f"--seed-file={r}/munge/munged.seed")
            self._wait_for(lambda: (r / "run" / "munge.socket").exists(), "munged's socket", 15)
            self._spawn("slurmctld", "slurmctld", "-D", "-i")
            self._wait_for(lambda: self.cmd("scontrol", "ping", check=False).stdout.count("UP") > 0,
                           "slurmctld to answer", timeout)
            for n in self.nodes:
                self._spawn(f"slurmd-{n}", "slurmd", "-D", "-N", n)
            self._wait_for(self._nodes_idle, f"nodes {', '.join(self.nodes)} to be idle", timeout)
        except Exception:
            self.stop()
            raise
        return self

    def _nodes_idle(self) -> bool:
        p = self.cmd("sinfo", "-h", "-N", "-o", "%N %T", check=False)
        states = dict(l.split() for l in p.stdout.splitlines() if len(l.split()) == 2)
        return all(states.get(n) == "idle" for n in self.nodes)

    def _wait_for(self, ready, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while not ready():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{name} exited with status {p.returncode} while waiting for {what}\n"
                                       f"{_tail(self.root / 'log' / f'{name}.out')}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")
            time.sleep(0.5)

    def stop(self):
        """Cancel every job, wait for them to end, stop the daemons (only the ones started here)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            ids = self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if ids:
                self.cmd("scancel", *ids, check=False)
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                    time.sleep(1)
        order = [n for n in self.procs if n.startswith("slurmd-")] + ["slurmctld", "munged"]
        for name in order:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    if argv[0] == "up":
        root.mkdir(parents=True, exist_ok=True)
        c = Cluster(root).start()
        pids = {n: p.pid for n, p in c.procs.items()}
        (root / "run" / "pids").write_text("".join(f"{n} {pid}\n" for n, pid in pids.items()))
        print(f"export SLURM_CONF={c.conf}")
        return 0
    c = Cluster(root)
    conf_env = c.env()
    ids = subprocess.run(["squeue", "-h", "-o", "%i"], env=conf_env, capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["scancel", *ids], env=conf_env)
        time.sleep(5)
    pidfile = root / "run" / "pids"
    for line in reversed(pidfile.read_text().splitlines() if pidfile.exists() else []):
        name, pid = line.split()
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
