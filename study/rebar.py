"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018) for a categorical sample.

With z = theta + G (Gumbels, a function of theta at fixed noise), D = onehot(argmax z), z~ the
Gumbel-perturbed logits conditioned on argmax = D and reparameterised in theta (the exponential
race of study.gumbel.conditional_gumbel with `differentiable=True`; detaching it, as the
project's Gumbel-Rao does, would bias REBAR), sigma(x) = softmax(x / lambda) and a control
variate c:

    g = [f(D) - c(z~)] grad log p(D) + grad c(z) - grad c(z~)

REBAR: c(x) = eta f(sigma(x)). RELAX: c(x) = eta f(sigma(x)) + r_rho(sigma(x)), r_rho a one-hidden-
layer network per replica. Both are unbiased for every eta, lambda and rho. f is evaluated at three
points per sample (D, sigma(z), sigma(z~)) and differentiated at the two relaxed ones.

In training (study.population), eta, lambda (the relaxation temperature) and rho adapt online,
per replica, by Adam on the squared norm of the replica's estimate: E||g||^2 = ||grad||^2 +
Var g, and the first term does not depend on them, so this descends the variance (Tucker et al.
Sec. 3.3; Grathwohl et al. Alg. 2). lambda starts at the trial's tau0 (the schedule is not
used); eta at the spec's `rebar_eta` / `relax_eta`; r's output layer at zero, so RELAX starts
as REBAR. They are part of the population's checkpointed state. A probe of the trial's own
relaxation takes their current values; a probe elsewhere uses eta from the spec and r = 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from study.discriminator import twice_differentiable_logits
from study.estimator_base import Draw, Estimator
from study.gumbel import conditional_gumbel, gumbel_from_exponential, one_hot

__all__ = ["ControlVariate", "Rebar", "control_generator_loss", "make_control"]

_ADAPT_LR = 1e-2  # Adam's step for eta, log lambda and rho


def _per_replica(value, shape: tuple[int, ...], replica_dim: int, dtype, device) -> Tensor | float:
    """A float, or a per-replica tensor [R] laid out for values of `shape` [G, S, *rest]: over
    G = R n replica-major groups (replica_dim 0: a population, a probe) or along dim replica_dim
    (a batch dim of estimate_gradients' logits)."""
    if not isinstance(value, Tensor):
        return float(value)
    value = value.to(dtype=dtype, device=device)
    if replica_dim == 0:
        rows = value.repeat_interleave(shape[0] // value.shape[0]) if shape[0] != value.shape[0] else value
        return rows.view(-1, *([1] * (len(shape) - 1)))  # [G, 1, ..]
    view = [1] * len(shape)
    view[replica_dim] = value.shape[0]
    return value.view(view)


def _network(x: Tensor, net: list[Tensor], replica_dim: int) -> Tensor:
    """r_rho(x) for x [G, S, *rest, K] with per-replica weights [R, K, H], [R, 1, H], [R, H, 1],
    [R, 1, 1]; replicas as in `_per_replica`. -> [G, S, *rest]."""
    w1, b1, w2, b2 = net
    moved = x.movedim(replica_dim, 0)  # replica-major
    rows = moved.reshape(w1.shape[0], -1, x.shape[-1])  # [R, M, K]
    h = torch.tanh(torch.baddbmm(b1, rows, w1))  # [R, M, H]
    out = torch.baddbmm(b2, h, w2).reshape(moved.shape[:-1])  # [.., replica-major]
    return out.movedim(0, replica_dim)  # [G, S, *rest]


class Rebar(Estimator):
    """REBAR, and RELAX with `learned = True`: points [D, sigma(z), sigma(z~)]."""

    one_hot = False  # f is evaluated at relaxed points
    emits_one_hot = True  # but the sample shown to the discriminator is the one-hot D

    def __init__(self, name: str, *, learned: bool):
        super().__init__(name)
        self.learned = learned

    def noise_segments(self, shape, *, emit_only=False, **options):
        return [("gumbel", tuple(shape))] + ([] if emit_only else [("conditional", (1, *shape))])

    def draw(self, logits, noise, shape, *, emit_only=False, control=None, control_dim=0, **options):
        gumbel = gumbel_from_exponential(noise("gumbel", tuple(shape), 0))  # ~Gumbel(0, 1), [G, S, *rest, K]
        index = (logits.expand(shape) + gumbel).argmax(dim=-1)  # [G, S, *rest]
        if emit_only:
            return Draw(gumbel, index)
        exponentials = noise("conditional", (1, *shape), 1)  # ~Exp(1), [1, G, S, *rest, K]
        eta, net = (control.eta, control.net) if control is not None else (options["eta"], None)
        if net is None and self.learned:
            net, control_dim = ControlVariate.zero_network(1, shape[-1], options["hidden"], logits.dtype, logits.device), 0
        eta = _per_replica(eta, shape[:-1], control_dim, logits.dtype, logits.device)  # float or broadcastable to [G, S, *rest]
        extra = dict(exponentials=exponentials, eta=eta, net=net, control_dim=control_dim)
        return Draw(gumbel, index, extra=extra)

    def sample(self, logits, draw, tau):
        shape = draw.gumbel.shape
        lg = logits.expand(shape)  # [G, S, *rest, K]
        z = lg + draw.gumbel  # reparameterised Gumbel-max logits
        z_cond = lg + conditional_gumbel(lg, draw.index, num_samples=1, exponentials=draw.extra["exponentials"], differentiable=True)[0]
        vertex = one_hot(draw.index, shape[-1], lg.dtype)
        return torch.stack([vertex, torch.softmax(z / tau, dim=-1), torch.softmax(z_cond / tau, dim=-1)])  # [3, G, S, *rest, K]

    def gradient(self, logits: Tensor, y: Tensor, values: Tensor, grad: Tensor | None, draw: Draw, *, create_graph: bool = False) -> Tensor:
        """The estimate w.r.t. `logits` [G, 1|S, *rest, K] (the mean over the S samples), from the
        points y [3, G, S, *rest, K], f's values there [3, G, S, *rest] and its gradients [3, ...]
        (of the mean over S). `grad` None: the values are f of y with their graph, and the pathwise
        terms are differentiated through them; with create_graph the estimate then stays a function
        of eta, lambda and rho, curvature of f included (training's adaptation)."""
        eta, net, control_dim = draw.extra["eta"], draw.extra["net"], draw.extra["control_dim"]
        samples = y.shape[2]
        if grad is None:
            pathwise = eta * (values[1] - values[2]) / samples  # [G, S, *rest]
        else:  # f's gradient held fixed at the points: y . grad has the gradient J^T grad
            pathwise = eta * ((y[1] * grad[1]).sum(dim=-1) - (y[2] * grad[2]).sum(dim=-1))  # [G, S, *rest]
        control_cond = eta * values[2]  # c(z~) [G, S, *rest]
        if net is not None:
            r1, r2 = _network(y[1], net, control_dim), _network(y[2], net, control_dim)
            pathwise = pathwise + (r1 - r2) / samples
            control_cond = control_cond + r2
        (path_grad,) = torch.autograd.grad(pathwise.sum(), logits, create_graph=create_graph, retain_graph=True)
        score = torch.softmax(logits, dim=-1)  # p, [G, 1|S, *rest, K]
        per_sample = (values[0] - control_cond).unsqueeze(-1) * (y[0] - score) / samples  # [G, S, *rest, K]
        if logits.shape[1] == 1 and samples > 1:
            per_sample = per_sample.sum(dim=1, keepdim=True)
        return per_sample + path_grad  # [G, 1|S, *rest, K]

    def surrogate(self, logits, y, values, grad, draw=None):
        g = self.gradient(logits, y, values, grad, draw).detach()
        return (logits * g).sum(dim=tuple(range(1, logits.ndim)))  # [G]: its gradient is g


class ControlVariate:
    """A population's REBAR / RELAX parameters, per replica, and their Adam (see the module docstring)."""

    def __init__(self, replicas: int, categories: int, *, eta: float, tau0: float, hidden: int | None, dtype, device):
        self.eta = torch.full((replicas,), float(eta), dtype=dtype, device=device, requires_grad=True)
        self.log_temperature = torch.full((replicas,), math.log(tau0), dtype=dtype, device=device, requires_grad=True)
        self.net = None if hidden is None else self.zero_network(replicas, categories, hidden, dtype, device, seed=0)
        params = [self.eta, self.log_temperature] + (self.net or [])
        self.optimizer = torch.optim.Adam(params, lr=_ADAPT_LR)

    @staticmethod
    def zero_network(replicas: int, categories: int, hidden: int, dtype, device, seed: int = 0) -> list[Tensor]:
        """r_rho's weights: the hidden layer drawn (seeded, the same for every replica), the output 0."""
        rng = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(categories)
        w1 = ((torch.rand(categories, hidden, generator=rng, dtype=dtype) * 2 - 1) * bound).expand(replicas, -1, -1).clone()
        params = [w1, torch.zeros(replicas, 1, hidden, dtype=dtype), torch.zeros(replicas, hidden, 1, dtype=dtype), torch.zeros(replicas, 1, 1, dtype=dtype)]
        return [p.to(device).requires_grad_(True) for p in params]

    def detached(self) -> "ControlVariate":
        """A copy of the current values without gradients (probes; a snapshot before an update)."""
        view = object.__new__(ControlVariate)
        view.eta, view.log_temperature = self.eta.detach().clone(), self.log_temperature.detach().clone()
        view.net = None if self.net is None else [p.detach().clone() for p in self.net]
        return view

    def temperature(self) -> Tensor:
        return self.log_temperature.detach().exp()  # lambda, [R]

    def adapt(self, estimate: Tensor) -> None:
        """One Adam step on sum over replicas of ||estimate_r||^2 ([R, ...], a function of the parameters)."""
        params = [self.eta, self.log_temperature] + (self.net or [])
        grads = torch.autograd.grad(estimate.square().sum(), params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self.optimizer.step()

    def state_dict(self) -> dict:
        tensors = [self.eta, self.log_temperature] + (self.net or [])
        return {"tensors": [t.detach().cpu().clone() for t in tensors], "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        tensors = [self.eta, self.log_temperature] + (self.net or [])
        with torch.no_grad():
            for t, v in zip(tensors, state["tensors"]):
                t.copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])


def make_control(config, replicas: int, categories: int, dtype, device) -> ControlVariate | None:
    """The adapted parameters of a population that trains with REBAR or RELAX, else None."""
    if config.relaxation not in ("rebar", "relax"):
        return None
    learned = config.relaxation == "relax"
    eta = config.relax_eta if learned else config.rebar_eta
    return ControlVariate(replicas, categories, eta=eta, tau0=config.tau0, hidden=config.relax_hidden if learned else None, dtype=dtype, device=device)


def control_generator_loss(estimator: Rebar, control: ControlVariate, logits: Tensor, noise, params: list[Tensor], shape: tuple[int, int, int], options: dict) -> tuple[Tensor, Tensor]:
    """A REBAR / RELAX generator step: the G loss per replica [R] and a surrogate [R] whose gradient
    w.r.t. the generator is the estimate. First adapts eta, lambda (and rho) by one Adam step on the
    estimate's squared norm, computed as a function of them (f through a twice-differentiable
    discriminator, so that lambda's gradient includes f's curvature); the estimate used is the one
    from before that step."""
    R, B, K = shape
    theta = logits.detach().requires_grad_(True)  # [R, 1|B, K]
    draw = estimator.draw(theta.detach(), noise, shape, control=control, **options)
    with torch.enable_grad():
        y = estimator.sample(theta, draw, control.log_temperature.exp().view(-1, 1, 1))  # [3, R, B, K]
        points = y.movedim(0, 1).reshape(R, 3 * B, K)  # [R, 3 B, K]
        values = F.softplus(-twice_differentiable_logits(points, params)).view(R, 3, B).movedim(1, 0)  # [3, R, B]
        estimate = estimator.gradient(theta, y, values, None, draw, create_graph=True)  # [R, 1|B, K]
        control.adapt(estimate)
    surrogate = (logits * estimate.detach()).sum(dim=(1, 2))  # [R]: its gradient is the estimate
    return values[0].detach().mean(dim=1), surrogate
