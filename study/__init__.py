"""gumbel-study: the Gumbel-max and Gumbel-softmax tricks, measured.

The torch-only library. Ray lives in `study.sweep` alone and is not imported here. The public API
below is re-exported lazily (PEP 562), so that `import study.vocab` or `study.config`'s readers
(analysis) do not pay for importing torch until they use a name that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ESTIMATORS": "study.estimators",
    "estimate_gradients": "study.estimators",
    "exact_gradient": "study.estimators",
    "conditional_gumbel": "study.gumbel",
    "gumbel_max": "study.gumbel",
    "gumbel_noise": "study.gumbel",
    "gumbel_softmax": "study.gumbel",
    "gradient_stats": "study.probes",
    "Schedule": "study.schedules",
    "constant": "study.schedules",
    "exponential": "study.schedules",
    "linear": "study.schedules",
    "stepwise": "study.schedules",
}

__all__ = [
    "ESTIMATORS",
    "Schedule",
    "conditional_gumbel",
    "constant",
    "estimate_gradients",
    "exact_gradient",
    "exponential",
    "gradient_stats",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_softmax",
    "linear",
    "stepwise",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
