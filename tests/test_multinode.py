"""A real two-node Ray cluster on loopback: head + worker started with `ray start`, the smoke
study submitted with `ray job submit`, trials spread over both nodes, results in shared storage.

    pytest -m multinode            # this test alone (about 1-2 minutes)

Safe on a machine shared with other Ray users:
- every port Ray would otherwise take by default (6379, 8265, 10001, 52365) is chosen free here;
- the cluster lives in its own short temp dir (/tmp/rmn-XXXX: unix socket paths are limited to
  ~107 bytes) and has its own auth token file; ~/.ray/auth_token is neither read nor written;
- token authentication stays ON (RAY_AUTH_MODE=token for the nodes and for every CLI call), and
  the dashboard binds to 127.0.0.1 (Ray itself reports the node IP as the machine's address, not
  127.0.0.1, and its GCS/raylet ports listen on all interfaces: the token guards them);
- teardown signals only the two `ray start --block` processes this test spawned (each started
  in a session of its own) and then what is left in those two sessions or carries the unique
  temp dir in its command line: never `ray stop`, never a kill by name; it asserts that nothing
  is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from record_rows import record_rows

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = BIN / "ray"
GUMBEL = BIN / "gumbel-study"
SPEC = REPO / "experiments" / "smoke.toml"
STUDY = "smoke"
TRIALS = 4  # smoke.toml: relaxation x tau0 = 2 x 2
SEEDS = 2
# The smoke spec, but with trials long enough (seconds, not a fraction of one) that the actor
# starting on the second node is up before the first node's actor has finished its trial: Tune
# (reuse_actors=True) hands a pending trial to whichever actor is free first, so with smoke's
# 60 steps one node would often run every trial. Still 4 evaluations per trial.
STEPS = 3000
EVAL_EVERY = 1000
EVAL_STEPS = list(range(0, STEPS + 1, EVAL_EVERY))  # [0, 1000, 2000, 3000]

STARTUP_S = 90
JOB_S = 240


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (sockets held until all are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ours(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions this cluster's private temp dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _session(sid: int) -> list[int]:
    """PIDs of live processes in session `sid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200])
        except OSError:
            out.append(f"{pid}: (gone)")
    return out


class LoopbackCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))
        self.storage = self.root / "storage"
        self.storage.mkdir()
        (self.gcs_port, self.dashboard_port, self.client_port, self.head_agent_port, self.worker_agent_port) = _free_ports(5)
        self.gcs = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",  # keep auth on, with this cluster's own token
            RAY_AUTH_TOKEN_PATH=str(token),
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.procs: list[subprocess.Popen] = []

    # -- processes -------------------------------------------------------------------------
    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen([str(RAY), "start", *args, "--block"], env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={self.root / 'ray'}"]
        self._start("head", [
            "--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
            '--resources={"head_node": 1}',
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}", f"--dashboard-agent-listen-port={self.head_agent_port}",
            *common,
        ])  # fmt: skip
        self._wait(lambda: self._nodes_alive() >= 1, "head node")
        self._start("worker", [
            f"--address={self.gcs}", "--node-ip-address=127.0.0.1",
            '--resources={"worker_node": 1}', f"--dashboard-agent-listen-port={self.worker_agent_port}",
            *common,
        ])  # fmt: skip
        self._wait(lambda: self._nodes_alive() >= 2, "worker node")

    def _wait(self, ready, what: str) -> None:
        deadline = time.time() + STARTUP_S
        while time.time() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"`ray start` exited with {proc.returncode} while waiting for the {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(1.0)
        raise AssertionError(f"{what} not up after {STARTUP_S} s:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(self.root.glob("*.log")))

    # -- talking to the cluster (all through the CLI, with the token; no ray.init here) ------
    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(RAY), *args], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def state(self, resource: str) -> list[dict]:
        out = self.ray("list", resource, "--address", self.gcs, "--detail", "--format", "json", "--limit", "10000")
        if out.returncode != 0:
            raise AssertionError(f"ray list {resource} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        return json.loads(out.stdout)

    def _nodes_alive(self) -> int:
        try:
            req = urllib.request.Request(f"{self.dashboard}/api/version")
            urllib.request.urlopen(req, timeout=2).close()
        except urllib.error.HTTPError:
            pass  # up, and (rightly) asking for the token
        except OSError:
            return 0
        try:
            return sum(1 for n in self.state("nodes") if n.get("state") == "ALIVE")
        except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired):
            return 0

    # -- teardown ----------------------------------------------------------------------------
    def leftovers(self) -> list[int]:
        """This cluster's live processes: those in the sessions of the two `ray start` processes
        (start_new_session=True: session id == their pid; Ray's workers rename themselves
        `ray::...` but stay in the session) and any carrying the unique temp dir in their command line."""
        pids = set(_ours(str(self.root)))
        for proc in self.procs:
            pids.update(_session(proc.pid))
        return sorted(pids)

    def _wait_gone(self, seconds: float) -> list[int]:
        deadline = time.time() + seconds
        while (left := self.leftovers()) and time.time() < deadline:
            time.sleep(0.25)
        return left

    def stop(self) -> list[int]:
        """Stop the two `ray start --block` processes this test spawned, worker first: SIGTERM to
        each (it drains its node and stops that node's processes); then SIGKILL to whatever of
        this cluster outlives a grace period. Returns the PIDs still alive (should be none)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                pass
        for pid in self._wait_gone(20):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        return self._wait_gone(10)


@pytest.fixture
def cluster():
    if not RAY.exists() or not GUMBEL.exists():
        pytest.skip("needs the venv's `ray` and `gumbel-study` scripts (make install)")
    try:
        import ray.dashboard  # noqa: F401  (extra `dashboard`: ray[default])
    except ImportError:
        pytest.skip("needs the `dashboard` extra (ray[default]) for `ray job submit`")
    c = LoopbackCluster()
    try:
        c.start()
        yield c
    finally:
        leftovers = c.stop()
        if not leftovers:
            shutil.rmtree(c.root, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster still alive after teardown (see {c.root}): {_describe(leftovers)}"


def test_smoke_study_runs_across_two_nodes(cluster):
    nodes = {n["node_id"]: n for n in cluster.state("nodes") if n["state"] == "ALIVE"}
    role = {nid: ("head" if "head_node" in n["resources_total"] else "worker" if "worker_node" in n["resources_total"] else "?") for nid, n in nodes.items()}
    assert sorted(role.values()) == ["head", "worker"], role

    # Auth is on: the dashboard refuses a request without the token.
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=10)
    assert denied.value.code in (401, 403)

    submission = f"gumbel-multinode-{secrets.token_hex(4)}"
    started = time.time()
    job = cluster.ray(
        "job", "submit", "--address", cluster.dashboard, "--submission-id", submission,
        "--entrypoint-resources", '{"head_node": 1}',  # the driver on the head; trials go anywhere
        "--", str(GUMBEL), "run", str(SPEC), "--address", cluster.gcs, "--storage", str(cluster.storage), "--max-concurrent", "2",
        "--set", f"steps={STEPS}", "--set", f"eval_every={EVAL_EVERY}",
        timeout=JOB_S,
    )  # fmt: skip
    job_s = time.time() - started
    status = cluster.ray("job", "status", "--address", cluster.dashboard, submission)
    assert job.returncode == 0 and "succeeded" in status.stdout.lower(), f"job failed after {job_s:.0f} s:\n{job.stdout[-6000:]}\n{job.stderr[-3000:]}\n{status.stdout}\n{cluster.logs()}"

    # Results in the shared storage: every trial's result.json, with every evaluation, and its
    # record (synced from the node it ran on), with every seed at every evaluation.
    experiment = cluster.storage / STUDY
    results = sorted(experiment.glob("*/result.json"))
    assert len(results) == TRIALS, f"{len(results)} result.json files under {experiment}: {[p.parent.name for p in results]}"
    trial_pids = {}
    for path in results:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert [r["step"] for r in rows] == EVAL_STEPS, (path, [r.get("step") for r in rows])
        evals = record_rows(path.parent)
        assert sorted((r["step"], r["seed"]) for r in evals) == sorted((t, s) for t in EVAL_STEPS for s in {r["seed"] for r in evals}), path
        assert len(evals) == SEEDS * len(EVAL_STEPS), path
        trial_pids[path.parent.name] = {r["pid"] for r in rows}
    assert (experiment / "tuner.pkl").exists()

    # The trials ran on both nodes: map each trial's worker pid to the node of the actor with that pid.
    actors = [a for a in cluster.state("actors") if a.get("pid")]
    node_of_pid = {a["pid"]: a["node_id"] for a in actors}
    trial_roles = {trial: {role.get(node_of_pid.get(pid), f"unknown pid {pid}") for pid in pids} for trial, pids in trial_pids.items()}
    used = set().union(*trial_roles.values())
    assert used == {"head", "worker"}, f"trials by node: {trial_roles} pids {trial_pids}; actors: {[(a.get('class_name'), a['pid'], role.get(a['node_id'])) for a in actors]}"
    print(f"\nmultinode: job {job_s:.1f} s; trials by node: {trial_roles}")
