"""The cluster launch files in experiments/cluster: valid for the tools that read them, pinned to
the Ray this project pins, and opening nothing to the internet. Offline: no cloud credentials."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "experiments" / "cluster"
REPO = CLUSTER.parents[1]
RAY_UP = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
KUBERAY = CLUSTER / "kuberay.yaml"
SBATCH = CLUSTER / "slurm.sbatch"
README = CLUSTER / "README.md"
ALL_FILES = [*RAY_UP.values(), KUBERAY, SBATCH]

PLACEHOLDER = re.compile(r"__[A-Z][A-Z0-9_]*__")
# What a user would put in place of each placeholder: the rendered file must still validate.
SAMPLE_VALUES = {
    "__GUMBEL_REPO__": "https://github.com/example/gumbel-study",
    "__GUMBEL_REV__": "0123456789abcdef0123456789abcdef01234567",
    "__AMI_ID__": "ami-0123456789abcdef0",
    "__SECURITY_GROUP_ID__": "sg-0123456789abcdef0",
    "__GCP_PROJECT__": "example-project",
    "__GCP_IMAGE__": "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570",
    "__BUCKET__": "example-bucket",
}
PUBLIC_CIDRS = ("0.0.0.0/0", "::/0")


def _load(path: Path, render: bool = False):
    text = path.read_text()
    if render:
        for token, value in SAMPLE_VALUES.items():
            text = text.replace(token, value)
        assert not PLACEHOLDER.search(text), f"{path.name}: placeholder without a sample value: {PLACEHOLDER.findall(text)}"
    return yaml.safe_load(text)


def _walk(node, path=()):
    """Yield (path, key, value) for every mapping entry in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def _commands(config: dict, *keys: str) -> str:
    return "\n".join(str(c) for key in keys for c in config.get(key) or [])


# --- ray up: AWS and GCP -------------------------------------------------------------------------


def _prepared(name: str, render: bool) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(_load(RAY_UP[name], render=render)))  # merges Ray's provider defaults; offline
    validate_config(config)  # Ray's JSON schema (ray/autoscaler/ray-schema.json) + its own checks
    return config


@pytest.mark.parametrize("render", [False, True], ids=["as-committed", "rendered"])
@pytest.mark.parametrize("name", sorted(RAY_UP))
def test_ray_up_config_passes_ray_validation(name, render):
    # Only the provider bootstrap (`ray up` creating keys, roles, subnets) needs the cloud; the
    # schema and the merge with Ray's defaults are what ray up checks before that.
    pytest.importorskip("jsonschema")
    config = _prepared(name, render)
    assert config["provider"]["type"] == name
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", sorted(RAY_UP))
def test_ray_up_config_cpu_head_autoscaled_gpu_workers(name):
    config = _prepared(name, render=True)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_workers = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, f"no GPU worker type in {sorted(workers)}"
    for kind, spec in gpu_workers.items():
        assert 0 <= spec["min_workers"] < spec["max_workers"] <= config["max_workers"], (kind, spec["min_workers"], spec["max_workers"])
    docker = config["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    assert images and all(ray.__version__ in image and image.startswith("rayproject/ray") for image in images), images
    assert "gpu" in docker["image"] or "gpu" in docker.get("worker_image", ""), "GPU workers need the CUDA image"


@pytest.mark.parametrize("name", sorted(RAY_UP))
def test_ray_up_config_installs_a_pinned_revision(name):
    config = _load(RAY_UP[name])
    setup = _commands(config, "setup_commands", "head_setup_commands", "worker_setup_commands")
    assert re.search(r'pip install [^\n]*"gumbel-study\[dashboard\] @ git\+__GUMBEL_REPO__@__GUMBEL_REV__"', setup), setup
    assert "constraints/cpu.txt" not in setup, "the cluster needs the CUDA torch, not the laptop's CPU pin"


@pytest.mark.parametrize("name", sorted(RAY_UP))
def test_ray_up_config_opens_no_public_ports(name):
    text = RAY_UP[name].read_text()
    config = _prepared(name, render=True)
    # Ray's own defaults start the dashboard on 0.0.0.0: the config must override them.
    head_start = _commands(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start, head_start
    starts = _commands(config, "head_start_ray_commands", "worker_start_ray_commands")
    for banned in ("0.0.0.0", "--ray-debugger-external", "--ray-client-server-port"):
        assert banned not in starts, banned
    assert "0.0.0.0" not in text and "::/0" not in text
    # Any extra ingress rule handed to Ray must not be open to the world.
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        for cidr in [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]:
            assert cidr not in PUBLIC_CIDRS, rule
    nodes = config["available_node_types"].values()
    if name == "aws":
        # Without SecurityGroupIds Ray creates a group that allows SSH from 0.0.0.0/0.
        assert all(n["node_config"].get("SecurityGroupIds") for n in nodes), "every node type needs the pre-made security group"
    else:
        # Without networkInterfaces Ray picks the project's first subnet (the default network
        # allows SSH from 0.0.0.0/0); these name the dedicated subnet.
        for n in nodes:
            subnets = [i.get("subnetwork", "") for i in n["node_config"].get("networkInterfaces", [])]
            assert subnets and all(s.endswith("/subnetworks/gumbel-study") for s in subnets), subnets


@pytest.mark.parametrize("name", sorted(RAY_UP))
def test_ray_up_config_keeps_token_auth_on(name):
    config = _prepared(name, render=True)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), (key, starts)
    assert "RAY_AUTH_MODE=disabled" not in RAY_UP[name].read_text()
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", "the token must reach every node"


# --- KubeRay ---------------------------------------------------------------------------------------


def _rayjob(render: bool = False) -> dict:
    docs = [d for d in yaml.safe_load_all(_render_text(KUBERAY) if render else KUBERAY.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, [d.get("kind") for d in docs]
    return jobs[0]


def _render_text(path: Path) -> str:
    text = path.read_text()
    for token, value in SAMPLE_VALUES.items():
        text = text.replace(token, value)
    return text


def test_rayjob_manifest_is_pinned_to_this_ray():
    job = _rayjob(render=True)
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    images = [value for _, key, value in _walk(job) if key == "image"]
    assert len(images) >= 2, images  # head + GPU worker group
    assert all(ray.__version__ in image.rsplit(":", 1)[-1] for image in images), images
    workers = cluster["workerGroupSpecs"]
    gpu_groups = [
        g for g in workers
        if any(str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "0")) not in ("0", "") for c in g["template"]["spec"]["containers"])
    ]  # fmt: skip
    assert gpu_groups, "no GPU worker group"
    for group in gpu_groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1, group
        assert any("gpu" in c["image"] for c in group["template"]["spec"]["containers"])


def test_rayjob_runs_the_tradeoff_study_and_cleans_up():
    spec = _rayjob()["spec"]
    assert re.fullmatch(r"gumbel-study run experiments/tradeoff\.toml --storage s3://__BUCKET__/\S+.*", spec["entrypoint"]), spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "__GUMBEL_REV__" in runtime_env["working_dir"], "the spec files must come from the pinned revision"
    assert any("gumbel-study" in p and "__GUMBEL_REV__" in p for p in runtime_env["pip"]), runtime_env["pip"]


def test_rayjob_exposes_nothing_publicly_and_keeps_auth_on():
    job = _rayjob(render=True)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress"), "no Ingress for the dashboard"
    for _, key, value in _walk(job):
        if key in ("serviceType", "type") and isinstance(value, str):
            assert value not in ("LoadBalancer", "NodePort"), (key, value)
        assert key not in ("hostNetwork", "hostPort"), key
    for doc in yaml.safe_load_all(KUBERAY.read_text()):
        if doc and doc.get("kind") in ("Service", "Ingress", "Route"):
            pytest.fail(f"{doc['kind']} {doc.get('metadata', {}).get('name')}: expose the dashboard with kubectl port-forward only")
    text = KUBERAY.read_text()
    assert "0.0.0.0" not in text and "dashboard-host" not in text
    assert job["spec"]["rayClusterSpec"].get("authOptions", {}).get("mode") == "token"


# --- SLURM -----------------------------------------------------------------------------------------


def test_sbatch_script_passes_bash_syntax_check():
    bash = shutil.which("bash")
    assert bash, "bash not found"
    result = subprocess.run([bash, "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "--format=gcc", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sbatch_script_follows_the_ray_slurm_pattern():
    text = SBATCH.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    assert "set -euo pipefail" in text
    assert re.search(r"srun .*\\\n\s+ray start --head --node-ip-address=\"\$head_ip\" --port=", text), "head: srun ray start --head"
    assert re.search(r"srun .*\\\n\s+ray start --address=\"\$head_address\"", text), "workers: srun ray start --address"
    assert text.count("--block &") == 2
    assert "--dashboard-host=127.0.0.1" in text
    assert re.search(r'gumbel-study run "\$SPEC" --address "\$head_address" --storage "\$STORAGE"', text)
    assert "export RAY_AUTH_MODE=token" in text and "RAY_AUTH_MODE=disabled" not in text
    assert "0.0.0.0" not in text
    for forbidden in ("ray stop", "pkill", "killall"):
        assert forbidden not in text, f"{forbidden}: stop only this job's own steps"


# --- all files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_no_public_ingress_or_listen_address(path):
    text = path.read_text()
    for needle in ("0.0.0.0", "::/0", "LoadBalancer", "NodePort", "--ray-debugger-external"):
        assert needle not in text, f"{path.name}: {needle}"


def test_every_placeholder_is_documented_and_rendered_by_the_readme():
    readme = README.read_text()
    for path in ALL_FILES:
        for token in sorted(set(PLACEHOLDER.findall(path.read_text()))):
            assert token in SAMPLE_VALUES, f"{path.name}: {token} has no sample value in this test"
            assert f"s|{token}|" in readme, f"{path.name}: README's sed command does not fill {token}"


def test_readme_has_the_commands_for_each_launcher():
    readme = README.read_text()
    for command in (
        "ray up build/cluster/aws.yaml", "ray up build/cluster/gcp.yaml", "ray attach", "ray job submit",
        "ray dashboard", "kubectl apply -f build/cluster/kuberay.yaml", "kubectl port-forward", "sbatch",
        "--storage s3://", "--storage gs://", "ssh -N -L 8265:127.0.0.1:8265", "tensorboard",
    ):  # fmt: skip
        assert command in readme, command


def test_tradeoff_spec_fits_the_gpu_workers():
    spec_path = REPO / "experiments" / "tradeoff.toml"
    if not spec_path.exists():
        pytest.skip("experiments/tradeoff.toml not written yet")
    from study.config import load_spec

    spec = load_spec(str(spec_path), {})
    assert spec.resources.gpus > 0, "tradeoff.toml is the GPU-cluster grid"
    for name in RAY_UP:
        config = _prepared(name, render=True)
        gpu = [t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
        assert any(spec.resources.cpus <= t["resources"]["CPU"] and spec.resources.gpus <= t["resources"]["GPU"] for t in gpu), name
    job = _rayjob(render=True)
    limits = [c["resources"]["limits"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert any(float(lim.get("nvidia.com/gpu", 0)) >= spec.resources.gpus and float(lim.get("cpu", 0)) >= spec.resources.cpus for lim in limits), limits
