"""Security: data-only parsing, safe checkpoint loading, localhost-only services, auth left on."""

import ipaddress
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from proc_tree import process_tree

ROOT = Path(__file__).resolve().parents[1]


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoint_loading_refuses_code(tmp_path):
    from study.config import TrialConfig
    from study.train import Trial, load_state

    exploit = _Exploit()
    exploit.target = str(tmp_path / "PWNED")
    torch.save({"population": exploit}, tmp_path / "state.pt")
    trial = Trial(TrialConfig(steps=2, eval_every=1), 1)
    with pytest.raises(pickle.UnpicklingError):
        load_state(trial, tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_no_eval_exec_or_pickle_of_user_files():
    pattern = re.compile(r"\b(eval|exec)\(|pickle\.loads?\(|yaml\.load\(|weights_only\s*=\s*False")
    offenders = []
    for folder in ("study", "analysis"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders
    loads = [line for p in (ROOT / "study").rglob("*.py") for line in p.read_text().splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for line in loads)


def test_embedded_ray_binds_dashboard_to_localhost_and_keeps_auth(monkeypatch):
    import ray

    from study import sweep

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    sweep._init_ray(None, 2)
    sweep._init_ray(None, 2, dashboard=True)
    assert calls == [
        {"num_cpus": 2, "include_dashboard": False, "dashboard_host": "127.0.0.1"},
        {"num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1"},
    ]
    source = (ROOT / "study" / "sweep.py").read_text() + (ROOT / "study" / "cli.py").read_text()
    assert "0.0.0.0" not in source
    assert not re.search(r"AUTH\w*\s*[\]\)]?\s*=\s*['\"]?(disabled|none|0|false)", source, re.IGNORECASE)


# Starts embedded Ray exactly as `gumbel-study run` does, makes it start a worker, prints what the
# driver sees, then holds Ray up until the test has read the sockets and closes stdin.
_EMBEDDED_RAY = """
import json, os, sys
import ray
from ray._private import ray_constants
from study import sweep

@ray.remote
def worker_pid():
    return os.getpid()

sweep._init_ray(None, 1)
pid = ray.get(worker_pid.remote())
print(json.dumps({
    "worker": pid,
    "node_ip": ray.util.get_node_ip_address(),
    "switch_restored": sweep._CLUSTER_SWITCH not in os.environ and ray_constants.ENABLE_RAY_CLUSTER,
}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _listening() -> dict[str, tuple[ipaddress._BaseAddress, int]]:
    """{socket inode: (address, port)} of every listening TCP socket, IPv4 and IPv6."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, len(host), 8))
            sockets[fields[9]] = (ipaddress.ip_address(raw), int(port, 16))
    return sockets


def _is_loopback(address: ipaddress._BaseAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux /proc")
def test_embedded_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.Popen([sys.executable, "-c", _EMBEDDED_RAY], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=60)
            pytest.fail(f"embedded Ray did not start:\n{proc.stderr.read()[-3000:]}")
        seen = json.loads(line)
        processes = process_tree(proc.pid)
        listening = _listening()
        bound = [(processes[pid], *listening[inode]) for pid in processes for inode in _socket_inodes(pid) if inode in listening]
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    names = {name for name, _, _ in bound}
    # Not vacuous: the GCS, the raylet and the worker Ray started for us all listen somewhere.
    assert seen["worker"] in processes
    assert {"gcs_server", "raylet"} <= names, bound
    assert len(bound) >= 4, bound
    public = [(name, str(address), port) for name, address, port in bound if not _is_loopback(address)]
    assert not public, f"Ray ports open beyond loopback: {public}"
    assert seen["node_ip"] == "127.0.0.1"
    assert seen["switch_restored"], "the loopback switch leaked past ray.init"
