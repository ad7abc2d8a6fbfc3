"""Security: data-only parsing, safe checkpoint loading, localhost-only services, auth left on."""

import pickle
import re
from pathlib import Path

import pytest
import torch

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
