"""A real single-node Slurm for the tests, on loopback, in a folder of its own: ``munged``, ``slurmctld``
and ``slurmd`` (Debian's slurm-wlm 22.05), started in the foreground by ``start`` and stopped by pid by
``Cluster.stop``. Nothing is written outside the folder: the munge socket, key and seed, Slurm's state,
spool, logs and pid files all live there, and the ports are free ones, so two clusters (two test runs)
can run side by side on one machine.

The node declares more CPUs than the machine has (``SlurmdParameters=config_overrides`` keeps slurmd from
draining it for that): trials ask one CPU each, so two in flight fit on a 2-core machine with room to
spare. Accounting is off, as on a small cluster without slurmdbd: ``sacct`` fails (submitit then prints
"Bypassing sacct error") and job states come from ``squeue``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")


def installed() -> bool:
    """Whether Debian's munge, slurmctld, slurmd and slurm-client are here (``.ci/run`` installs them)."""
    return all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in PROGRAMS)


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster: its folder, the environment that points Slurm's commands at it, its daemons."""

    folder: Path
    node: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def command(self, *args: str, timeout: float = 30) -> str:
        """A Slurm command (``squeue``, ``scontrol``...) against this cluster; its stdout."""
        done = subprocess.run(
            [_program(args[0]), *args[1:]], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def node_state(self) -> str:
        return self.command("sinfo", "-h", "-N", "-o", "%T").strip()

    def jobs(self) -> dict[str, str]:
        """Every job the controller still knows (finished ones for ``MinJobAge``): id -> state."""
        out = self.command("squeue", "-h", "--states=all", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def start_slurmd(self) -> None:
        self.procs["slurmd"] = self._daemon("slurmd", "-D", "-N", self.node)

    def kill(self, name: str) -> None:
        """SIGKILL one daemon (a node that dies); ``stop`` still waits for it."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def stop(self) -> None:
        """Every daemon this cluster started, by pid: SIGTERM, then SIGKILL after 20 s; jobs still running
        are cancelled first (slurmstepd and the jobs' processes are the daemons' children by then)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.command("scancel", "--full", "--user", str(os.getuid()), timeout=10)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stepd in _stepds(self.folder):  # a job step's daemon left behind by a killed slurmd
            try:
                os.kill(stepd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _daemon(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.out", "ab")  # noqa: SIM115 - the daemon's, closed with it
        return subprocess.Popen(
            [_program(name), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C goes to pytest, not to the daemons
        )


def _stepds(folder: Path) -> list[int]:
    """Pids of ``slurmstepd`` processes working for this cluster (their spool folder is ours)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "slurmstepd" in text.split(" ", 1)[0] and _environ_has(cmdline.parent, str(folder)):
            found.append(int(cmdline.parent.name))
    return found


def _environ_has(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "environ").read_bytes()
    except OSError:
        return False


SLURM_CONF = """\
ClusterName=sweeplab-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket,cred_expire=10
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout={slurmd_timeout}
MinJobAge=600
KillWait=30
GresTypes=gpu
MpiDefault=none
SwitchType=switch/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


STAND_INS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


def start(
    folder: Path, cpus: int = 8, gpus: int = 2, slurmd_timeout: int = 300, timeout: float = 60
) -> Cluster:
    """munged, slurmctld and slurmd in ``folder``; returns once ``sinfo`` shows the node idle. A daemon
    that fails to start stops the ones already started and raises with its log.

    ``gpus``: GPUs the node declares, counted only (``gres.conf`` names no device file): a job asking
    ``--gres=gpu:1`` is scheduled as on a GPU node, without a GPU to use."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    node = socket.gethostname()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    conf = folder / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            node=node,
            folder=folder,
            ctld_port=_free_port(),
            d_port=_free_port(),
            cpus=cpus,
            memory=memory,
            slurmd_timeout=slurmd_timeout,
            gpus=gpus,
        )
    )
    # Stand-in device files (character devices any machine has): slurmd counts a node's GPUs by the files
    # gres.conf names (with none it reports 0 and the node is refused), and sets each job's
    # CUDA_VISIBLE_DEVICES from the ones it was given.
    (folder / "gres.conf").write_text("".join(f"Name=gpu File={f}\n" for f in STAND_INS[:gpus]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = folder / "munge.key"
    subprocess.run([_program("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
    key.chmod(0o600)
    cluster = Cluster(folder, node, env)
    try:
        cluster.procs["munged"] = cluster._daemon(
            "munged",
            "-F",
            "--force",
            f"--socket={folder / 'munge.socket'}",
            f"--key-file={key}",
            f"--pid-file={folder / 'munged.pid'}",
            f"--log-file={folder / 'munged.log'}",
            f"--seed-file={folder / 'munged.seed'}",
        )
        _wait(lambda: (folder / "munge.socket").exists(), cluster, "munged", timeout)
        cluster.procs["slurmctld"] = cluster._daemon("slurmctld", "-D", "-i")
        _wait(lambda: _answers(cluster), cluster, "slurmctld", timeout)
        cluster.start_slurmd()
        _wait(lambda: cluster.node_state() == "idle", cluster, "slurmd", timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _answers(cluster: Cluster) -> bool:
    try:
        cluster.command("sinfo", "-h", timeout=10)
        return True
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def _wait(ready, cluster: Cluster, name: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = cluster.procs[name]
        if proc.poll() is not None:
            break
        try:
            if ready():
                return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.5)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted(cluster.folder.glob("*.log")) + sorted(cluster.folder.glob("*.out"))
    )
    raise RuntimeError(
        f"{name} did not come up in {timeout:.0f}s (exit {cluster.procs[name].poll()})\n{logs}"
    )
