"""Bad input is refused before any training: exit code 2, one line naming the field and value
(and the line number where there is one), no traceback. Table-driven over check, train and run.
Unreachable storage and Ray clusters too: the same one line, within 30 s, before Ray starts."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spec_text import SPEC_HEAD, assert_refused

from study import preflight
from study.cli import main
from study.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

GOOD = SPEC_HEAD + """steps = 10
eval_every = 5
probe_estimates = 20
eval_samples = 20
"""

# (case id, spec text or None for GOOD, extra --set items, stream file text or None, expected fragments)
CASES = [
    ("unknown-top-key", GOOD + 'colour = "red"\n', [], None, ["colour", "unknown key"]),
    ("unknown-fixed-key", GOOD.replace("steps = 10", "stepz = 10"), [], None, ["fixed.stepz", "unknown key"]),
    ("wrong-type", GOOD.replace("categories = 5", 'categories = "five"'), [], None, ["fixed.categories", "'five'", "integer"]),
    ("tau-zero", GOOD + "tau0 = 0.0\n", [], None, ["tau0", "0.0"]),
    ("tau-negative", GOOD + "tau0 = -1.0\n", [], None, ["tau0", "-1.0"]),
    ("tau-nan", GOOD + "tau0 = nan\n", [], None, ["tau0", "nan"]),
    ("rate-negative", GOOD + 'schedule = "exponential"\nanneal_rate = -0.5\n', [], None, ["anneal_rate", "-0.5"]),
    ("k-one", GOOD.replace("categories = 5", "categories = 1"), [], None, ["categories", "1", ">= 2"]),
    ("probs-negative", GOOD.replace('"uniform"', '"probs:-0.2,0.6,0.6"').replace("categories = 5", "categories = 3"), [], None, ["target", "-0.2"]),
    ("probs-not-one", GOOD.replace('"uniform"', '"probs:0.2,0.2,0.2"').replace("categories = 5", "categories = 3"), [], None, ["target", "sum"]),
    ("stream-empty", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "\n  \n", ["target", "numbers.txt"]),
    ("stream-non-integer", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1 2\n3 2.5\n", ["target", ":2", "2.5"]),
    ("stream-negative", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1\n2\n-3\n", ["target", ":3", "-3"]),
    ("stream-too-large", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1\n9\n", ["target", ":2", "9"]),
    ("stream-missing", GOOD.replace('"uniform"', '"stream:nowhere.txt"'), [], None, ["target", "nowhere.txt"]),
    ("seeds-zero", GOOD.replace("seeds = 2", "seeds = 0"), [], None, ["seeds", "0"]),
    ("gpu-fraction", GOOD + "[resources]\ngpus = 1.5\n", [], None, ["resources.gpus", "1.5"]),
    ("toml-syntax", GOOD + "tau0 = = 1\n", [], None, ["TOML", "line 11"]),
    ("grid-not-list", GOOD + "[grid]\ntau0 = 1.0\n", [], None, ["grid.tau0", "list"]),
    ("grid-unknown-axis", GOOD + "[grid]\ntemperature = [1.0]\n", [], None, ["grid.temperature", "unknown"]),
    ("grid-empty", GOOD + "[grid]\ntau0 = []\n", [], None, ["grid.tau0", "at least one"]),
    ("grid-bad-value", GOOD + "[grid]\ntau0 = [1.0, -2.0]\n", [], None, ["tau0", "-2.0"]),
    ("relaxation-unknown", GOOD + 'relaxation = "gumbel"\n', [], None, ["relaxation", "gumbel"]),
    ("schedule-unknown", GOOD + 'schedule = "cosine"\n', [], None, ["schedule", "cosine"]),
    ("target-unknown", GOOD.replace('"uniform"', '"lognormal"'), [], None, ["target", "lognormal"]),
    ("tau-min-above-tau0", GOOD + 'schedule = "exponential"\ntau0 = 0.2\ntau_min = 0.5\n', [], None, ["tau_min", "0.5"]),
    ("batch-zero", GOOD + "batch_size = 0\n", [], None, ["batch_size", "0"]),
    ("probe-unknown", GOOD + 'probe_estimators = ["soft", "magic"]\n', [], None, ["probe_estimators", "magic"]),
    ("smoothing-one", GOOD + "label_smoothing = 1.0\n", [], None, ["label_smoothing", "1.0"]),
    ("lr-inf", GOOD + "lr_g = inf\n", [], None, ["lr_g", "inf"]),
    ("eval-every-zero", GOOD.replace("eval_every = 5", "eval_every = 0"), [], None, ["eval_every", "0"]),
    ("steps-negative", GOOD.replace("steps = 10", "steps = -5"), [], None, ["steps", "-5"]),
    ("dtype-half", GOOD + 'dtype = "float16"\n', [], None, ["dtype", "float16"]),
    ("name-slash", GOOD.replace('name = "bad"', 'name = "a/b"'), [], None, ["name", "a/b"]),
    ("set-unknown-key", GOOD, ["colour=red"], None, ["colour", "unknown key"]),
    ("set-no-equals", GOOD, ["tau0"], None, ["--set", "KEY=VALUE"]),
    ("set-bad-value", GOOD, ["tau0=-3"], None, ["tau0", "-3"]),
    ("grid-fixed-twice", GOOD + "[grid]\nsteps = [10, 20]\n", [], None, ["grid.steps", "[fixed]"]),
    ("code-in-target", GOOD.replace('"uniform"', "\"__import__('os').system('touch PWNED')\""), [], None, ["target", "__import__"]),
]


def _write(tmp_path: Path, spec_text: str | None, stream: str | None) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    if stream is not None:
        (tmp_path / "numbers.txt").write_text(stream)
    return spec


def _argv(command: str, spec: Path, sets: list[str], tmp_path: Path) -> list[str]:
    argv = [command, str(spec)]
    if command == "train":
        argv += ["--out", str(tmp_path / "out"), "--no-progress"]
    if command == "run":
        argv += ["--storage", str(tmp_path / "runs")]
    for item in sets:
        argv += ["--set", item]
    return argv


@pytest.mark.parametrize("command", ["check", "train", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(tmp_path, capsys, monkeypatch, command, case):
    name, text, sets, stream, fragments = case
    spec = _write(tmp_path, text, stream)
    monkeypatch.chdir(tmp_path)
    # If anything got as far as training or Ray, these would be called: make that a failure.
    monkeypatch.setattr("study.train.Trial.run", lambda *a, **k: pytest.fail("training started"))
    assert_refused(main(_argv(command, spec, sets, tmp_path)), capsys, fragments)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs" / "bad").exists()
    assert not (tmp_path / "PWNED").exists()


def test_bad_input_count():
    assert len(CASES) >= 25


def test_missing_spec_file(tmp_path, capsys):
    for command in ("check", "train", "run"):
        assert main([command, str(tmp_path / "absent.toml")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "absent.toml" in err[0] and "no such file" in err[0]


def test_unwritable_storage(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spec = _write(tmp_path, GOOD, None)
    monkeypatch.setattr("study.sweep._init_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["run", str(spec), "--storage", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--storage" in err[0] and "cannot write" in err[0]
    assert blocker.read_text() == "not a directory"


def test_train_refuses_unpinned_grid(tmp_path, capsys):
    spec = _write(tmp_path, GOOD + "[grid]\ntau0 = [0.5, 1.0]\nrelaxation = ['soft', 'hard']\n", None)
    assert main(["train", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tau0" in err and "relaxation" in err and "--set" in err


@pytest.mark.parametrize("command", ["check", "train", "run"])
def test_real_process_exit_code_and_no_traceback(tmp_path, command):
    """The same through a real process: exit status 2, one line on stderr, no traceback."""
    spec = _write(tmp_path, GOOD + "tau0 = -1.0\n", None)
    proc = subprocess.run([sys.executable, "-m", "study.cli", *_argv(command, spec, [], tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tau0" in lines[0] and "-1.0" in lines[0]
    assert "Traceback" not in proc.stderr


# --- Unreachable storage and clusters (issue 13 item 8): exit 2 and one line within 30 s, before Ray.

SMOKE = str(ROOT / "experiments" / "smoke.toml")
BUCKET = "s3://no-such-bucket-xyz/runs"
REFUSED = "connection refused"
# (case id, argv, extra environment, the line's `key='value'`, cause without network, or None: any cause)
UNREACHABLE = [
    ("run-storage-s3", ["run", SMOKE, "--storage", BUCKET], {}, f"--storage='{BUCKET}'", "cannot resolve host s3.amazonaws.com"),
    ("report-s3", ["report", f"{BUCKET}/quick"], {}, f"RUN_DIR='{BUCKET}/quick'", "cannot resolve host s3.amazonaws.com"),
    ("run-storage-gs", ["run", SMOKE, "--storage", "gs://no-such-bucket-xyz/runs"], {}, "--storage='gs://no-such-bucket-xyz/runs'", "cannot resolve host storage.googleapis.com"),
    ("run-address-closed", ["run", SMOKE, "--address", "127.0.0.1:1"], {}, "--address='127.0.0.1:1'", REFUSED),
    ("ray-address-env-closed", ["run", SMOKE], {"RAY_ADDRESS": "127.0.0.1:1"}, "RAY_ADDRESS='127.0.0.1:1'", REFUSED),
    ("run-address-client-closed", ["run", SMOKE, "--address", "ray://127.0.0.1:1"], {}, "--address='ray://127.0.0.1:1'", REFUSED),
    ("run-address-no-port", ["run", SMOKE, "--address", "127.0.0.1"], {}, "--address='127.0.0.1'", "HOST:PORT"),
    ("run-address-bad-port", ["run", SMOKE, "--address", "localhost:ray"], {}, "--address='localhost:ray'", "not a number"),
    ("ray-address-env-malformed", ["run", SMOKE], {"RAY_ADDRESS": "headnode"}, "RAY_ADDRESS='headnode'", "HOST:PORT"),
]
_NETWORK_CAUSES = ("cannot resolve host",)  # the causes that need a machine without network


def _isolated_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a new user on this machine: no RAY_ADDRESS, no AWS settings or
    credentials files, no instance-metadata lookups (which can hang off EC2), no proxies."""
    proxies = {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"}
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ADDRESS" and not k.startswith("AWS_") and k.upper() not in proxies}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(extra)
    return env


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("case", UNREACHABLE, ids=[c[0] for c in UNREACHABLE])
def test_unreachable_storage_or_cluster_fails_fast(tmp_path, case):
    name, argv, extra, named, cause = case
    if cause and cause.startswith(_NETWORK_CAUSES) and _resolves(cause.rpartition(" ")[2]):
        cause = None  # this machine has network: a missing bucket gives another cause; still exit 2
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "study.cli", *argv], cwd=tmp_path, env=_isolated_env(extra),
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"gumbel-study: error: {named}: "), lines[0]
    assert cause is None or cause in lines[0], (cause, lines[0])
    assert "Traceback" not in proc.stderr
    assert "Ray instance" not in proc.stdout + proc.stderr and proc.stdout == ""
    assert not (tmp_path / "runs").exists()
    assert took < 30, f"{name}: {took:.1f} s"  # the bound for failing on an unreachable target


def test_listening_address_passes_and_closed_port_fails():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        preflight.check_address(f"127.0.0.1:{port}")
        preflight.check_address(f"ray://localhost:{port}")
    with pytest.raises(ConfigError) as err:  # closed now
        preflight.check_address(f"127.0.0.1:{port}")
    assert err.value.key == "--address" and err.value.value == f"127.0.0.1:{port}" and REFUSED in err.value.reason
    assert str(err.value).count("\n") == 0


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":6379", "head:abc", "head:70000", "ray://head"])
def test_malformed_address(address):
    with pytest.raises(ConfigError) as err:
        preflight.check_address(address, "RAY_ADDRESS")
    assert err.value.key == "RAY_ADDRESS" and err.value.value == address


def test_auto_address_needs_a_recorded_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    preflight.check_address("local")  # Ray starts its own: nothing to check
    with pytest.raises(ConfigError, match="no running Ray cluster found"):
        preflight.check_address("auto")
    (tmp_path / "ray").mkdir()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{server.getsockname()[1]}\n")
        preflight.check_address("auto")
    with pytest.raises(ConfigError, match="recorded in"):  # a stale record: the cluster is gone
        preflight.check_address("auto")


def test_run_checks_ray_address_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ConfigError) as err:
        preflight.check_run("runs", None)
    assert err.value.key == "RAY_ADDRESS"
    with pytest.raises(ConfigError) as err:  # --address wins over RAY_ADDRESS, as in sweep.run_study
        preflight.check_run("runs", "127.0.0.1:2")
    assert err.value.key == "--address" and err.value.value == "127.0.0.1:2"
    monkeypatch.delenv("RAY_ADDRESS")
    preflight.check_run("runs", None)  # embedded Ray, local path: nothing to check here


def test_storage_dns_failure_names_the_host(monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError) as err:
        preflight.check_storage(BUCKET)
    assert str(err.value) == f"--storage='{BUCKET}': cannot resolve host s3.amazonaws.com: no network?"
    with pytest.raises(ConfigError, match="storage.googleapis.com"):
        preflight.check_storage("gs://bucket/runs/quick", "RUN_DIR", must_exist=True)


def test_storage_that_never_answers_times_out(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with socket.socket() as server:  # accepts connections (the backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        uri = f"s3://bucket/runs?endpoint_override=127.0.0.1:{server.getsockname()[1]}&scheme=http"
        started = time.monotonic()
        with pytest.raises(ConfigError, match="no answer within 1 s"):
            preflight.check_storage(uri, timeout=1.0)
        assert time.monotonic() - started < 5


def test_storage_endpoint_hosts(monkeypatch):
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "CLOUD_STORAGE_EMULATOR_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    assert preflight.storage_endpoint("s3://b/runs") == "s3.amazonaws.com"
    assert preflight.storage_endpoint("s3://b/runs?region=eu-west-1") == "s3.eu-west-1.amazonaws.com"
    assert preflight.storage_endpoint("s3://b/runs?endpoint_override=minio:9000&scheme=http") == "minio"
    assert preflight.storage_endpoint("gs://b/runs") == "storage.googleapis.com"
    assert preflight.storage_endpoint("abfs://c@acct.dfs.core.windows.net/runs") == "acct.dfs.core.windows.net"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    assert preflight.storage_endpoint("s3://b/runs") == "minio.local"


def test_file_uri_storage(tmp_path):
    preflight.check_storage(str(tmp_path / "plain-path"))  # not a URI: left to sweep / cmd_report
    preflight.check_storage((tmp_path / "new" / "runs").as_uri())  # created, like a plain --storage path
    assert (tmp_path / "new" / "runs").is_dir()
    preflight.check_storage(tmp_path.as_uri(), "RUN_DIR", must_exist=True)
    with pytest.raises(ConfigError, match="no such directory"):
        preflight.check_storage((tmp_path / "absent").as_uri(), "RUN_DIR", must_exist=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write there"):
        preflight.check_storage((tmp_path / "file" / "runs").as_uri())


def test_storage_causes():
    assert preflight.storage_cause(OSError("When resolving region for bucket 'b': AWS Error NETWORK_CONNECTION during HeadBucket operation: curlCode: 6, Could not resolve hostname; Details: Could not resolve host: b.s3.us-east-1.amazonaws.com")) == "cannot resolve host b.s3.us-east-1.amazonaws.com: no network?"
    assert preflight.storage_cause(OSError("When resolving region for bucket 'b': AWS Error RESOURCE_NOT_FOUND during HeadBucket operation: No response body.")) == "bucket does not exist"
    assert preflight.storage_cause(OSError("AWS Error ACCESS_DENIED during HeadObject operation")).startswith("access denied")
    assert preflight.storage_cause(OSError("first line\nsecond line")) == "first line"


def test_preflight_does_not_import_ray():
    code = "import sys, study.preflight; print('ray' in sys.modules, 'pyarrow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
