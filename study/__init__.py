"""gumbel-study: the Gumbel-max and Gumbel-softmax tricks, measured.

The torch-only library. Ray lives in `study.sweep` alone and is not imported here.
"""

from study.estimators import (
    ESTIMATORS,
    estimate_gradients,
    exact_gradient,
)
from study.gumbel import (
    conditional_gumbel,
    gumbel_max,
    gumbel_noise,
    gumbel_softmax,
)
from study.probes import (
    gradient_stats,
)
from study.schedules import (
    Schedule,
    constant,
    exponential,
    linear,
    stepwise,
)

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
