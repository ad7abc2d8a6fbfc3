"""Fail fast on unreachable storage and Ray clusters, before any Ray or training starts.

    check_storage(uri, option="--storage", must_exist=False)   # s3:// gs:// abfs:// file:// ...
    check_address(address, option="--address")                # HOST:PORT, ray://HOST:PORT, auto, local
    check_run(storage, address)                                # both, as `gumbel-study run` uses them

Left alone, pyarrow and the cloud SDKs retry an unresolvable host for 6-20 s and then raise a
traceback, an unreachable GCS may never answer, and `ray.init` retries a dead cluster address for
minutes without a word. These checks take well under a second on a machine without network, and
at most a bounded timeout otherwise (about 10 s for storage, 6 s for a cluster). Each raises
`ConfigError(option, value, cause)`, one line that the CLI prints with exit code 2. Plain local
paths are not checked here (`sweep._storage_path` and `cli.cmd_report` do that). Imports neither
torch nor ray; pyarrow only for a file:// URI: remote URIs are probed in a child process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from study.config import ConfigError

__all__ = ["check_address", "check_run", "check_storage"]

STORAGE_TIMEOUT_S = 10.0  # a whole probe of the storage: filesystem, region lookup, one stat
DNS_TIMEOUT_S = 5.0  # resolving one host name
CONNECT_TIMEOUT_S = 5.0  # a TCP connection to the cluster's GCS (or Ray Client) port

_T = TypeVar("_T")

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _within(seconds: float, fn: Callable[[], _T]) -> _T:
    """fn() in a daemon thread; TimeoutError if it has not returned after `seconds`.

    A daemon thread, so that a call still stuck in a C library does not keep the process alive
    after the error is reported.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=target, name="gumbel-preflight", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _host_of(endpoint: str) -> str | None:
    """The host of an endpoint given as a URL (`http://host:9000`) or as `host:port`."""
    return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname


def _resolve(host: str, port: int, timeout: float = DNS_TIMEOUT_S) -> None:
    """Raise OSError (socket.gaierror, TimeoutError) if `host` does not resolve within `timeout`."""
    _within(timeout, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


# ------------------------------------------------------------------------------------- storage


def storage_endpoint(uri: str) -> str | None:
    """The host a storage URI's client will contact first, where it can be told from the URI and
    the environment, else None (the probe alone then decides)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if "endpoint_override" in query:
        return _host_of(query["endpoint_override"])
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return _host_of(endpoint)
        region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return f"s3.{region}.amazonaws.com" if region else "s3.amazonaws.com"
    if scheme in ("gs", "gcs"):
        emulator = os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT")
        return _host_of(emulator) if emulator else "storage.googleapis.com"
    if scheme in ("abfs", "abfss") and "@" in parts.netloc:
        return _host_of(parts.netloc.rpartition("@")[2])
    if scheme in ("hdfs", "viewfs"):
        return parts.hostname
    return None


def storage_cause(err: BaseException) -> str:
    """A short cause for a pyarrow / cloud SDK error."""
    text = str(err)
    if isinstance(err, TimeoutError):
        return f"{text} (network down, or a credentials lookup hanging?)"
    if match := re.search(r"Could not resolve host(?:name)?: ([^\s;,]+)", text):
        return f"cannot resolve host {match.group(1)}: no network?"
    if match := re.search(r"Failed to connect to ([^\s;,]+)", text):
        return f"cannot connect to {match.group(1)}"
    if re.search(r"NoSuchBucket|RESOURCE_NOT_FOUND|HTTP response code: 404|bucket does not exist", text, re.I):
        return "bucket does not exist"
    if re.search(r"ACCESS_DENIED|AccessDenied|Forbidden|HTTP response code: 403|PERMISSION_DENIED", text):
        return "access denied (check the credentials)"
    if re.search(r"credential", text, re.I):
        return "no usable credentials"
    line = next((" ".join(part.split()) for part in text.splitlines() if part.strip()), "")
    return (line[:200] + ("..." if len(line) > 200 else "")) or type(err).__name__


# Run in a child process: a request stuck in the AWS SDK survives any thread timeout, and pyarrow's
# exit-time S3 finalizer then waits for it (80 s seen). The child is killed at the timeout instead,
# and skips its own finalizers with os._exit. It imports pyarrow only (0.2-0.5 s).
_PROBE_SCRIPT = """
import json, os, sys
try:
    import pyarrow.fs as pafs
    filesystem, path = pafs.FileSystem.from_uri(sys.argv[1])
    answer = {"type": filesystem.get_file_info(path).type.name}
except Exception as err:
    answer = {"error": str(err), "kind": type(err).__name__}
sys.stdout.write(json.dumps(answer))
sys.stdout.flush()
os._exit(0)
"""


class StorageError(OSError):
    """What the probe's pyarrow call raised, by its message."""


def _probe(uri: str, timeout: float) -> str:
    """The pyarrow FileType name (`Directory`, `File`, `NotFound`) of the URI's path.

    Raises StorageError with the SDK's message, or TimeoutError after `timeout` seconds.
    """
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, uri], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise StorageError(f"the storage probe failed: {last}") from None
    if "error" in answer:
        raise StorageError(answer["error"])
    return answer["type"]


def _check_local_uri(path: str, option: str, uri: str, must_exist: bool) -> None:
    """A file:// URI: the directory must exist (report), or be creatable and writable (run; as
    `sweep._storage_path` does for a plain path, it is created and a file written and removed)."""
    target = Path(path)
    if must_exist:
        if not target.is_dir():
            raise ConfigError(option, uri, "not a directory" if target.exists() else "no such directory")
        return
    check_writable(target, option, uri)


def check_writable(directory: Path, option: str, value: str) -> None:
    """Create `directory` if needed and write and remove a file there; ConfigError(option, value)
    naming the cause when that fails."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(option, value, f"cannot write there ({err.strerror or err})") from None


def check_storage(uri: str, option: str = "--storage", *, must_exist: bool = False, timeout: float = STORAGE_TIMEOUT_S) -> None:
    """Raise ConfigError(option, uri, cause) unless the storage URI can be reached within `timeout`.

    A path without `://` is left to the caller. `must_exist`: the URI must name an existing
    directory (a run directory to report on); otherwise it may be absent (Tune creates it) but
    not a file. First the endpoint's host name is resolved (fast, and the usual failure on a
    machine without network); then pyarrow builds the filesystem and stats the path, in a child
    process that is killed after `timeout` seconds.
    """
    if "://" not in uri:
        return
    scheme = uri.partition("://")[0].lower()
    if scheme == "file":
        import pyarrow.fs as pafs

        try:
            _, path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError, TypeError) as err:
            raise ConfigError(option, uri, f"not a valid file:// URI ({storage_cause(err)})") from None
        _check_local_uri(path, option, uri, must_exist)
        return
    host = storage_endpoint(uri)
    if host and not any(os.environ.get(v) for v in _PROXY_VARIABLES):  # behind a proxy, DNS may not see out
        try:
            _resolve(host, 443, min(timeout, DNS_TIMEOUT_S))
        except TimeoutError:
            raise ConfigError(option, uri, f"cannot resolve host {host}: no answer within {min(timeout, DNS_TIMEOUT_S):g} s") from None
        except OSError:
            raise ConfigError(option, uri, f"cannot resolve host {host}: no network?") from None

    try:
        kind = _probe(uri, timeout)
    except Exception as err:  # pyarrow's OSError, ValueError, ArrowInvalid ... with the SDK's text; TimeoutError
        raise ConfigError(option, uri, storage_cause(err)) from None
    if kind == "File":
        raise ConfigError(option, uri, "not a directory")
    if must_exist and kind == "NotFound":
        raise ConfigError(option, uri, "no such directory")


# ------------------------------------------------------------------------------------- address


def ray_address_file() -> Path:
    """Where `ray start` records the latest cluster's address (what `address="auto"` reads)."""
    if "RAY_TMPDIR" in os.environ:
        temp = os.environ["RAY_TMPDIR"]
    elif "TMPDIR" in os.environ and sys.platform.startswith("linux"):
        temp = os.environ["TMPDIR"]
    else:
        temp = "/tmp"
    return Path(temp, "ray", "ray_current_cluster")


def parse_address(address: str, option: str, shown: str | None = None) -> tuple[str, int]:
    """HOST:PORT ([IPv6]:PORT too) -> (host, port), else ConfigError naming `option`."""
    shown = address if shown is None else shown
    expected = "expected HOST:PORT (e.g. 127.0.0.1:6379), ray://HOST:PORT or auto"
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text:
        raise ConfigError(option, shown, expected)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(option, shown, f"port {port_text!r} is not a number; {expected}") from None
    if not 0 < port < 65536:
        raise ConfigError(option, shown, f"port {port} is out of range 1-65535")
    return host, port


def _connect(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def connect_cause(err: OSError, host: str, port: int, timeout: float) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve host {host}"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused: no Ray cluster listens on {host}:{port} (start one with `ray start --head`)"
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f"no answer from {host}:{port} within {timeout:g} s"
    return f"cannot connect to {host}:{port} ({(err.strerror or str(err)).lower()})"


def check_address(address: str, option: str = "--address", *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConfigError(option, address, cause) unless a TCP connection to the cluster opens.

    `local` (Ray starts a new cluster) and other `scheme://` addresses than `ray://` pass
    unchecked. `auto` is Ray's discovery: RAY_ADDRESS if set, else the address `ray start`
    recorded in /tmp/ray/ray_current_cluster, which must exist and answer.
    """
    value = address.strip()
    if value == "local":
        return
    target, where = value, ""
    if value == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env and env != "auto":
            target, where = env, f" (RAY_ADDRESS={env})"
        else:
            recorded = ray_address_file()
            try:
                target = recorded.read_text().strip()
            except OSError:
                raise ConfigError(option, address, f"no running Ray cluster found ({recorded} does not exist; start one with `ray start --head`)") from None
            where = f" (recorded in {recorded})"
    target = target.removeprefix("ray://")
    if "://" in target:
        return
    host, port = parse_address(target, option, address)
    try:
        _within(timeout + 1.0, lambda: _connect(host, port, timeout))
    except OSError as err:  # TimeoutError included
        raise ConfigError(option, address, connect_cause(err, host, port, timeout) + where) from None


def check_run(storage: str, address: str | None) -> None:
    """`gumbel-study run`'s checks: the storage URI, then the address it will join (--address,
    else RAY_ADDRESS, as sweep.run_study picks it)."""
    check_storage(storage, "--storage")
    if address:
        check_address(address, "--address")
    elif os.environ.get("RAY_ADDRESS"):
        check_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
