"""A real two-node Ray cluster on one machine, for tests: two `ray start --block` processes, torn down by group.

Facts this relies on (see the design notes, RAY.md "Two nodes on one machine"): 127.0.0.1 is rewritten to the
machine's address, so the nodes use 127.0.0.2 and 127.0.0.3; a private `--temp-dir` keeps any plain `ray.init()`
on the machine from attaching to this cluster; ports are odd ones (the client server outside 10002–19999) so the
cluster can coexist with the test session's own Ray; each node gets its OWN temp dir, because the runtime-env
agents of two nodes sharing one session directory unpack and garbage-collect the same `--working-dir` copy under
each other's jobs (seen here: a job's modules vanished mid-import); token auth is on with a token of our own, so
nothing is read from or written to ~/.ray. Each `ray start` runs in its own session and is stopped by signalling
its process group, never with `ray stop` (which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
GCS_PORT = 6390
DASHBOARD_PORT = 8365


@dataclass
class TwoNodeCluster:
    """Addresses and environment for talking to the running cluster from subprocesses."""

    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    temp_dir: Path
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, args: list[str], *, cwd: str | Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a command (e.g. `ray job submit ...`) against this cluster; output captured as text."""
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def logs_tail(self, chars: int = 4000) -> str:
        """The end of every `ray start` log, for assertion messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def cluster_env(temp_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `ray start`, `ray job submit` and the jobs they run: our token, our interpreter first."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    env.update(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            "RAY_DEDUP_LOGS": "0",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
            "RAY_TRAIN_V2_ENABLED": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_worker_niceness": "0",  # as hexray's local Ray: workers are not starved by the test session
            "TMPDIR": str(temp_dir),
        }
    )
    env.update(extra or {})
    return env


def _start(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)


def node_home(base_dir: Path, role: str) -> Path:
    """Each node's own HOME and working directory: like two machines, they share no local disk (their
    processes — raylet, workers, job drivers — inherit it), so files can only travel through storage both see."""
    home = Path(base_dir) / f"{role}-home"
    home.mkdir(parents=True, exist_ok=True)
    return home


class NodeExited(RuntimeError):
    """A `ray start` process ended while the cluster was coming up (`proc` says which)."""

    def __init__(self, message: str, proc: subprocess.Popen) -> None:
        super().__init__(message)
        self.proc = proc


WORKER_START_TRIES = 3


def _wait_for(check, what: str, timeout: float, procs: list[subprocess.Popen], log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(log_dir.glob("*.log")))
                raise NodeExited(f"`ray start` exited with {proc.returncode} while waiting for {what}:\n{logs}", proc)
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"two-node cluster: {what} not ready after {timeout:.0f} s")


def _alive_nodes(dashboard_url: str, token: str) -> list[dict]:
    request = urllib.request.Request(
        f"{dashboard_url}/nodes?view=summary", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        payload = json.loads(response.read())
    summary = payload.get("data", {}).get("summary", [])
    return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]


def _pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (our private temp dir: only this cluster's processes)."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(proc_dir.name))
    return pids


def _stop(procs: list[subprocess.Popen], temp_dir: Path, grace: float = 8.0) -> None:
    """SIGTERM each process group we started (workers first), SIGKILL what is left after `grace` seconds.

    Ray gives its worker processes their own process groups, so after the groups we also kill any process whose
    command line names this cluster's private temp dir (raylet-spawned workers, agents).
    """
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for proc in reversed(procs):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader: sweep stragglers (gcs_server etc.)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for _ in range(3):
        pids = _pids_mentioning(f"{temp_dir}/")
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


def _ray_executable(env: Mapping[str, str]) -> str:
    """The `ray` CLI of the interpreter running the tests (its bin dir is first on the cluster's PATH)."""
    found = shutil.which("ray", path=env["PATH"])
    if found is None:
        raise FileNotFoundError(f"no `ray` executable on PATH next to {sys.executable}")
    return found


@contextmanager
def two_node_cluster(
    base_dir: Path,
    *,
    cpus_per_node: int = 2,
    head_resources: Mapping[str, float] | None = None,
    worker_resources: Mapping[str, float] | None = None,
    object_store_bytes: int = 300 * 2**20,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[TwoNodeCluster]:
    """Start a head on 127.0.0.2 and a worker node on 127.0.0.3, yield once both are alive, then tear down.

    `head_resources` / `worker_resources` are custom resources (labels) that let a test pin work to one node.
    """
    base_dir = Path(base_dir)
    temp_dir = Path(os.environ.get("HEXRAY_CLUSTER_TMP", "/tmp")) / f"hxr{secrets.token_hex(3)}"
    # Ray's socket paths must stay short (AF_UNIX limit ~107 bytes), so the temp dir is not under pytest's tmp_path.
    temp_dir.mkdir(parents=True)
    log_dir = base_dir / "ray-start-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = cluster_env(temp_dir, env)
    ray = [_ray_executable(full_env), "start", "--block", "--disable-usage-stats"]
    common = [f"--num-cpus={cpus_per_node}", f"--object-store-memory={object_store_bytes}", "--num-gpus=0"]
    head_cmd = ray + common + [
        "--head",
        f"--node-ip-address={HEAD_IP}",
        f"--port={GCS_PORT}",
        f"--temp-dir={temp_dir / 'h'}",
        f"--dashboard-host={HEAD_IP}",
        f"--dashboard-port={DASHBOARD_PORT}",
        "--ray-client-server-port=20101",
        "--dashboard-agent-listen-port=52465",
        f"--resources={json.dumps(dict(head_resources or {}))}",
    ]
    worker_cmd = ray + common + [
        f"--address={HEAD_IP}:{GCS_PORT}",
        f"--node-ip-address={WORKER_IP}",
        f"--temp-dir={temp_dir / 'w'}",
        "--dashboard-agent-listen-port=52466",
        f"--resources={json.dumps(dict(worker_resources or {}))}",
    ]
    cluster = TwoNodeCluster(
        gcs_address=f"{HEAD_IP}:{GCS_PORT}",
        dashboard_url=f"http://{HEAD_IP}:{DASHBOARD_PORT}",
        env=full_env,
        temp_dir=temp_dir,
        log_dir=log_dir,
    )
    token = full_env["RAY_AUTH_TOKEN"]
    try:
        head_home, worker_home = node_home(base_dir, "head"), node_home(base_dir, "worker")
        cluster.procs.append(_start(head_cmd, {**full_env, "HOME": str(head_home)}, log_dir / "head.log", head_home))
        _wait_for(lambda: len(_alive_nodes(cluster.dashboard_url, token)) >= 1, "head", timeout, cluster.procs, log_dir)
        _start_worker(cluster, worker_cmd, {**full_env, "HOME": str(worker_home)}, worker_home, token, timeout)
        yield cluster
    finally:
        _stop(cluster.procs, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_worker(cluster: TwoNodeCluster, cmd: list[str], env: dict[str, str], home: Path, token: str,
                  timeout: float) -> None:
    """Start the worker node; start it again if `ray start` gives up. It waits a fixed 30 s for its raylet to
    register with the GCS (ray/_private/node.py), which a 2-core machine under load can exceed (seen: the head took
    57 s to start next to a training run, then the worker's `ray start` exited with "timed out during startup")."""
    for attempt in range(1, WORKER_START_TRIES + 1):
        worker = _start(cmd, env, cluster.log_dir / f"worker-{attempt}.log", home)
        cluster.procs.append(worker)
        try:
            _wait_for(lambda: len(_alive_nodes(cluster.dashboard_url, token)) >= 2, "worker node", timeout,
                      cluster.procs, cluster.log_dir)
            return
        except NodeExited as err:
            if err.proc is not worker or attempt == WORKER_START_TRIES:
                raise
            cluster.procs.remove(worker)
            _stop([worker], cluster.temp_dir / "w")  # what the failed attempt left (its raylet, agents)
