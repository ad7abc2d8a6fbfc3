"""R replicas of the toy GAN as stacked tensors: one batched step trains every seed of a trial.

Shapes: R replicas, B batch, K categories, Z generator noise, H hidden width.

- Generator: free logits theta [R, K] (the original toy), or an MLP noise [R, B, Z] -> logits
  [R, B, K] with weights [R, Z, H], [R, H, K].
- Discriminator: logistic regression (weights [R, K, 1]) or an MLP K -> width^depth -> 1, all
  as batched matmuls over the replica dim. Its forward and backward are written by hand
  (_disc_forward, _disc_backward): training asks for exactly the gradients it needs, with the
  loss's gradient in closed form and no autograd graph (1.26x per step at R = 64, K = 10);
  probes differentiate through it as one autograd node (_Discriminator).
- Non-saturating GAN loss: D minimises softplus(-D(real)) + softplus(D(fake)); G minimises
  softplus(-D(fake)). Each outer step is one discriminator step, then `g_steps` generator steps.
- Losses are summed over replicas, so each replica's gradient is that of its own loss, and one
  Adam over the stacked tensors equals R independent Adams (Adam is elementwise).
- The D step's one-hot halves (the real samples; the fake ones too unless a replica is soft)
  take at most K distinct values, so when K < B they are fed as the K unit vectors weighted by
  their counts: the same loss and gradient from K rows instead of B (_d_inputs).

Reproducibility: replica r owns a torch.Generator seeded with its seed. It draws the replica's
initial parameters, then fills blocks of Exp(1) numbers (-log of uniforms) ([T, M]: T outer steps of M numbers,
both set by the replica's own config, never by R) from which every training draw is carved:
uniforms exp(-E) for real data, Gumbels -log E for samples, Gaussians for generator noise. So
replica r of a population follows the same trajectory as a population of that seed alone.
Evaluation (probes, sample metrics) uses one separate generator, so evaluating never perturbs
training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from study.allocator import release_freed_memory, reuse_freed_memory
from study.config import TrialConfig
from study.estimators import estimate_gradients, exact_gradient
from study.gumbel import conditional_gumbel, gumbel_from_exponential, one_hot, softmax, straight_through
from study.evaluation import Evaluation, ProbeResult
from study.probes import gradient_stats
from study.schedules import tau_tensor
from study.targets import Target, parse_target

__all__ = ["Population", "ReplicaSettings"]

RELAXATION_CODES = {"soft": 0, "hard": 1, "gumbel_rao": 2, "reinforce": 3}
_BLOCK_NUMBERS = 1 << 16  # Exp(1) numbers per replica per refill (about 256 KiB in float32)
_EVAL_SEED_OFFSET = 0x5EED_E7A1  # the evaluation generator's seed is seeds[0] + this


@dataclass(frozen=True)
class ReplicaSettings:
    """Per-replica hyperparameters; None means the trial config's value for every replica."""

    tau0: tuple[float, ...] | None = None
    rate: tuple[float, ...] | None = None
    relaxation: tuple[str, ...] | None = None
    target: tuple[str, ...] | None = None


def _normal_from_exponentials(e1: Tensor, e2: Tensor) -> Tensor:
    """Box-Muller with U = exp(-E): sqrt(-2 log U1) = sqrt(2 E1)."""
    return torch.sqrt(2.0 * e1) * torch.cos(2.0 * math.pi * torch.exp(-e2))  # ~N(0, 1)


def _uniform_init(shape: tuple[int, ...], fan_in: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default range
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2.0 - 1.0) * bound


class _Group:
    """Replicas [start, stop) that share a relaxation, and so the layout of their random draws."""

    def __init__(self, start: int, stop: int, relaxation: str, numbers_per_step: int, dtype: torch.dtype, device: torch.device):
        self.start, self.stop, self.relaxation = start, stop, relaxation
        self.numbers_per_step = numbers_per_step
        self.block_steps = max(1, min(256, _BLOCK_NUMBERS // numbers_per_step))
        self.buffer = torch.empty(stop - start, self.block_steps, numbers_per_step, dtype=dtype, device=device)  # [Rg, T, M]
        self.cursor = self.block_steps  # empty: refill on first use
        self.block_states: list[Tensor] = []  # generator states before the current block's draw

    def refill(self, generators: list[torch.Generator]) -> None:
        # The states before the draw are all a checkpoint needs to rebuild this block.
        self.block_states = [generators[r].get_state() for r in range(self.start, self.stop)]
        for i, r in enumerate(range(self.start, self.stop)):
            self.buffer[i].uniform_(generator=generators[r])  # ~U[0, 1), [T, M]
        # -log U ~ Exp(1); uniform_ + log is ~3x faster than exponential_ on CPU.
        self.buffer.clamp_min_(torch.finfo(self.buffer.dtype).tiny).log_().neg_()  # [Rg, T, M]
        self.cursor = 0

    def next_row(self, generators: list[torch.Generator]) -> Tensor:
        if self.cursor == self.block_steps:
            self.refill(generators)
        row = self.buffer[:, self.cursor]  # [Rg, M]
        self.cursor += 1
        return row


class _Carver:
    """Cuts consecutive views out of a row of random numbers [Rg, M]."""

    def __init__(self, row: Tensor):
        self.row, self.offset = row, 0

    def take(self, *shape: int) -> Tensor:
        n = math.prod(shape)
        out = self.row[:, self.offset : self.offset + n].reshape(self.row.shape[0], *shape)
        self.offset += n
        return out


def _take_all(carvers: list[_Carver], *shape: int) -> Tensor:
    """The same cut from every group's row, stacked over the replica dim: [R, *shape]."""
    parts = [c.take(*shape) for c in carvers]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


_CHUNK_BYTES = 2 << 20  # widest activation of one chunk of replicas: 4 and 1 MiB were slower (see _disc_step)
_NARROW = 16  # input widths at or below this get their input gradient computed transposed
_SLOPE = 0.2  # LeakyReLU's negative slope


def _disc_forward(x: Tensor, params: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """The discriminator of r replicas, by hand: x [r, M, K] -> logits [r, M], and the activations
    [x, h_1, ..., h_L] that _disc_backward reads. params [w1, b1, ...] (sliced to r) are used as
    given, so pass them detached: training computes its gradients with _disc_backward, and
    probes go through _Discriminator."""
    hs = [x]
    h = x
    for i in range(0, len(params) - 2, 2):
        h = torch.baddbmm(params[i + 1], h, params[i])  # [r, M, width]
        F.leaky_relu_(h, _SLOPE)  # in place: the backward reads the sign from the output
        hs.append(h)
    w, b = params[-2], params[-1]  # [r, H, 1], [r, 1, 1]
    # The width-1 output layer as w^T h^T: as a gemm with one output column it ran at ~4 GFLOP/s.
    out = torch.bmm(w.transpose(1, 2), h.transpose(1, 2)).squeeze(1).add_(b.view(-1, 1))  # [r, M]
    return out, hs


def _disc_backward(
    g_out: Tensor, hs: list[Tensor], params: list[Tensor], *, weights: bool, inputs: bool,
) -> tuple[list[Tensor | None], Tensor | None]:
    """Gradients of sum(g_out * logits) from dlogits g_out [r, M]: w.r.t. the parameters (when
    `weights`, else Nones) and w.r.t. the input x [r, M, K] (when `inputs`, else None).

    Only what is asked for is computed: the D step needs no input gradient, a G step no weight
    gradients. The input gradient of a narrow first layer (K <= _NARROW) is computed as
    (w g^T)^T: a gemm with ten output columns ran at 44 GFLOP/s, the transposed one at 112."""
    grads: list[Tensor | None] = [None] * len(params)
    if weights:
        grads[-2] = torch.bmm(g_out.unsqueeze(1), hs[-1]).transpose(1, 2)  # [r, H, 1]
        grads[-1] = g_out.sum(dim=1).view(-1, 1, 1)  # [r, 1, 1]
    if not inputs and len(params) == 2:
        return grads, None
    g = g_out.unsqueeze(-1) * params[-2].transpose(1, 2)  # d/dh_L, [r, M, H]
    for layer in reversed(range(len(params) // 2 - 1)):
        torch.ops.aten.leaky_relu_backward.grad_input(g, hs[layer + 1], _SLOPE, True, grad_input=g)  # in place
        if weights:
            grads[2 * layer] = torch.bmm(hs[layer].transpose(1, 2), g)  # [r, n, m]
            grads[2 * layer + 1] = g.sum(dim=1, keepdim=True)  # [r, 1, m]
        if layer == 0 and not inputs:
            return grads, None
        w = params[2 * layer]  # [r, n, m]
        g = torch.bmm(w, g.transpose(1, 2)).transpose(1, 2) if w.shape[1] <= _NARROW else torch.bmm(g, w.transpose(1, 2))  # [r, M, n]
    return grads, g


class _Discriminator(torch.autograd.Function):
    """The discriminator as one autograd node, for callers that differentiate through it (the
    probes' f(y)): apply(x, *params) -> logits [r, M]."""

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        out, hs = _disc_forward(x, list(params))
        ctx.save_for_backward(*hs, *params)
        ctx.layers = len(hs)
        return out

    @staticmethod
    def backward(ctx, g_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        hs, params = list(saved[: ctx.layers]), list(saved[ctx.layers :])
        needs = ctx.needs_input_grad
        grads, gx = _disc_backward(g_out, hs, params, weights=any(needs[1:]), inputs=needs[0])
        return (gx, *grads)


def _d_loss(out: Tensor, weights: Tensor, n_real: int) -> tuple[Tensor, Tensor]:
    """Non-saturating D loss per replica [r] from logits [r, n + m] (n real rows, then m fake
    rows) and each row's weight [r, n + m], and its gradient w.r.t. the logits [r, n + m].

    With s = -1 for real rows and +1 for fake ones, loss = sum w softplus(s out), and
    dloss/dout = s w sigmoid(s out)."""
    signed = torch.cat([-out[:, :n_real], out[:, n_real:]], dim=1)  # s * out, [r, n + m]
    loss = (F.softplus(signed) * weights).sum(dim=1)  # [r]
    g_out = torch.sigmoid(signed).mul_(weights)  # [r, n + m]
    g_out[:, :n_real].neg_()
    return loss, g_out


def _d_pass(x: Tensor, params: list[Tensor], weights: Tensor, n_real: int) -> tuple[Tensor, list[Tensor]]:
    """The D step's loss [r] on x [r, n + m, K] and its gradients w.r.t. the parameters."""
    out, hs = _disc_forward(x, params)  # [r, n + m]
    loss, g_out = _d_loss(out, weights, n_real)  # [r], [r, n + m]
    grads, _ = _disc_backward(g_out, hs, params, weights=True, inputs=False)
    return loss, grads


def _g_pass(y: Tensor, params: list[Tensor], B: int, *, inputs: bool) -> tuple[Tensor, Tensor | None]:
    """softplus(-D(y)) per sample [r, B] and, when `inputs`, the gradient of its batch mean
    w.r.t. y [r, B, K]: what the G step needs from D."""
    out, hs = _disc_forward(y, params)  # [r, B]
    per_sample = F.softplus(-out)
    if not inputs:
        return per_sample, None
    g_out = torch.sigmoid(-out).mul_(-1.0 / B)  # d mean(softplus(-out)) / dout, [r, B]
    return per_sample, _disc_backward(g_out, hs, params, weights=False, inputs=True)[1]


class Population:
    """R replicas of (generator, discriminator) trained in lockstep."""

    def __init__(
        self,
        config: TrialConfig,
        seeds: list[int],
        *,
        settings: ReplicaSettings = ReplicaSettings(),
        device: torch.device | str = "cpu",
        targets: list[Target] | None = None,
        distinct_rows: bool = True,
    ):
        """`distinct_rows=False` feeds the D step all 2B rows even when K < B (see _d_inputs): the
        same training, slower; for benchmarks and tests."""
        if not seeds:
            raise ValueError("a population needs at least one seed")
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cpu":
            reuse_freed_memory()  # every step frees and reallocates its activations
        self.dtype = getattr(torch, config.dtype)
        R, K, B = len(seeds), config.categories, config.batch_size
        self.R, self.K, self.B = R, K, B

        def per_replica(values, default):
            values = tuple(values) if values is not None else (default,) * R
            if len(values) != R:
                raise ValueError(f"per-replica setting has {len(values)} values for {R} replicas")
            return values

        relaxations = per_replica(settings.relaxation, config.relaxation)
        for rel in relaxations:
            if rel not in RELAXATION_CODES:
                raise ValueError(f"unknown relaxation {rel!r}; known: {', '.join(RELAXATION_CODES)}")
        # Replicas are kept sorted by relaxation so that each group is a contiguous slice.
        order = sorted(range(R), key=lambda i: RELAXATION_CODES[relaxations[i]])
        self.seeds = [seeds[i] for i in order]
        self.relaxations = [relaxations[i] for i in order]
        tau0s = per_replica(settings.tau0, config.tau0)
        rates = per_replica(settings.rate, config.anneal_rate)
        target_specs = per_replica(settings.target, config.target)
        if targets is None:
            cache: dict[str, Target] = {}
            targets = [cache.setdefault(t, parse_target(t, K)) for t in target_specs]
        self.targets = [targets[i] for i in order]
        opts = dict(dtype=self.dtype, device=self.device)
        self.tau0 = torch.tensor([tau0s[i] for i in order], **opts)  # [R]
        self.rate = torch.tensor([rates[i] for i in order], **opts)  # [R]
        self.relaxation_code = torch.tensor([RELAXATION_CODES[r] for r in self.relaxations], device=self.device)  # [R]
        self.target_probs = torch.stack([t.probs for t in self.targets]).to(**opts)  # [R, K]
        cdf = self.target_probs.cumsum(dim=-1)
        self._target_cdf = (cdf / cdf[:, -1:]).contiguous()  # [R, K], last entry exactly 1
        self._stream_replicas = [r for r, t in enumerate(self.targets) if t.stream is not None]
        self._streams = [self.targets[r].stream.to(self.device) for r in self._stream_replicas]
        self.stream_pos = torch.zeros(R, dtype=torch.long)  # next index into each replica's stream

        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in self.seeds]
        self.eval_generator = torch.Generator(device=self.device).manual_seed(int(seeds[0]) + _EVAL_SEED_OFFSET)
        self.gen_params, self.disc_params = self._init_params()
        # One fused kernel per optimizer step over the stacked tensors (elementwise, so replicas stay independent).
        self.opt_g = torch.optim.Adam(self.gen_params, lr=config.lr_g, fused=True)
        self.opt_d = torch.optim.Adam(self.disc_params, lr=config.lr_d, fused=True)
        self.groups = self._make_groups()
        self.distinct_rows = distinct_rows and K < B  # one-hot halves of the D batch as K weighted rows
        self._vertex_fakes = all(g.relaxation != "soft" for g in self.groups)  # D-step fakes are one-hots
        self.step = 0
        self.loss_sums = torch.zeros(2, R, **opts)  # [d, g] since the last evaluation
        self.loss_counts = torch.zeros(2, **opts)

    # ------------------------------------------------------------------ parameters

    def _init_params(self) -> tuple[list[Tensor], list[Tensor]]:
        cfg, R, K, dt = self.config, self.R, self.K, self.dtype
        shapes_g: list[tuple[tuple[int, ...], int]]
        if cfg.generator == "logits":
            shapes_g = [((K,), 0)]
        else:
            Z, H = cfg.gen_noise_dim, cfg.gen_hidden
            shapes_g = [((Z, H), Z), ((1, H), Z), ((H, K), H), ((1, K), H)]
        widths = [K] + ([cfg.disc_width] * cfg.disc_depth if cfg.discriminator == "mlp" else []) + [1]
        shapes_d = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            shapes_d += [((fan_in, fan_out), fan_in), ((1, fan_out), fan_in)]
        gen = [torch.empty(R, *shape, dtype=dt) for shape, _ in shapes_g]
        disc = [torch.empty(R, *shape, dtype=dt) for shape, _ in shapes_d]
        for r, g in enumerate(self.generators):
            cpu_gen = torch.Generator().manual_seed(self.seeds[r])  # init on CPU: same on any device
            for p, (shape, fan_in) in zip(gen, shapes_g):
                if cfg.generator == "logits":
                    init = {"ones": torch.ones, "zeros": torch.zeros}.get(cfg.logit_init)
                    p[r] = init(shape, dtype=dt) if init else torch.randn(shape, generator=cpu_gen, dtype=dt)
                else:
                    p[r] = _uniform_init(shape, fan_in, cpu_gen, dt)
            for p, (shape, fan_in) in zip(disc, shapes_d):
                p[r] = _uniform_init(shape, fan_in, cpu_gen, dt)
        to = lambda ps: [p.to(self.device).requires_grad_(True) for p in ps]  # noqa: E731
        return to(gen), to(disc)

    def _make_groups(self) -> list[_Group]:
        groups, start = [], 0
        while start < self.R:
            rel = self.relaxations[start]
            stop = start
            while stop < self.R and self.relaxations[stop] == rel:
                stop += 1
            groups.append(_Group(start, stop, rel, self._numbers_per_step(rel), self.dtype, self.device))
            start = stop
        return groups

    def _noise_numbers(self) -> int:
        return 2 * self.B * self.config.gen_noise_dim if self.config.generator == "mlp" else 0

    def _numbers_per_step(self, relaxation: str) -> int:
        B, K = self.B, self.K
        per_g = self._noise_numbers() + B * K + (self.config.gumbel_rao_k * B * K if relaxation == "gumbel_rao" else 0)
        return B + self._noise_numbers() + B * K + self.config.g_steps * per_g

    # ------------------------------------------------------------------ forward passes

    def generator_logits(self, noise: Tensor | None = None) -> Tensor:
        """Logits [R, 1, K] (free logits) or [R, B, K] from noise [R, B, Z] (MLP)."""
        if self.config.generator == "logits":
            return self.gen_params[0].unsqueeze(1)  # [R, 1, K]
        w1, b1, w2, b2 = self.gen_params
        h = torch.relu(torch.baddbmm(b1, noise, w1))  # [R, B, H]
        return torch.baddbmm(b2, h, w2)  # [R, B, K]

    def disc_logits(self, y: Tensor, replica_dim: int = 0) -> Tensor:
        """Discriminator logits for inputs y [..., R, ..., K] -> [..., R, ...] (the K dim removed).

        Gradients reach y, never the discriminator's parameters (training uses _disc_step)."""
        replica_dim = replica_dim % y.ndim
        x = y.movedim(replica_dim, 0)  # [R, ..., K]
        rest = x.shape[1:-1]
        out = _Discriminator.apply(x.reshape(self.R, -1, self.K), *(p.detach() for p in self.disc_params))  # [R, M]
        return out.reshape(self.R, *rest).movedim(0, replica_dim)  # the replica dim back in place

    def _chunks(self, rows: int) -> list[slice]:
        """Replica slices whose widest activation ([r, rows, width]) stays within _CHUNK_BYTES."""
        width = max(p.shape[-1] for p in self.disc_params)
        most = max(1, _CHUNK_BYTES // (rows * width * self.dtype.itemsize))
        size = -(-self.R // -(-self.R // most))  # as many chunks as needed, of equal size: no small tail
        return [slice(start, min(start + size, self.R)) for start in range(0, self.R, size)]

    def tau(self, step: int | None = None) -> Tensor:
        """Per-replica temperatures [R] at `step` (default: the current step)."""
        cfg = self.config
        return tau_tensor(cfg.schedule, self.step if step is None else step, self.tau0, self.rate, cfg.tau_min, cfg.anneal_interval)

    # ------------------------------------------------------------------ sampling

    def _noise(self, carvers: list[_Carver]) -> Tensor | None:
        if self.config.generator != "mlp":
            return None
        Z = self.config.gen_noise_dim
        e = _take_all(carvers, 2, self.B, Z)  # [R, 2, B, Z]
        return _normal_from_exponentials(e[:, 0], e[:, 1])  # [R, B, Z]

    def _fake(self, carvers: list[_Carver], tau: Tensor, *, train: bool) -> tuple[Tensor, Tensor]:
        """Generator samples [R, B, K] (with the relaxation's gradient when `train`) and the logits."""
        logits = self.generator_logits(self._noise(carvers))  # [R, 1|B, K]
        B, K = self.B, self.K
        parts = []
        for group, carver in zip(self.groups, carvers):
            lg = logits[group.start : group.stop].expand(-1, B, K)  # [Rg, B, K]
            g = gumbel_from_exponential(carver.take(B, K))  # ~Gumbel(0, 1), [Rg, B, K]
            t = tau[group.start : group.stop].view(-1, 1, 1)  # [Rg, 1, 1]
            perturbed = lg + g  # [Rg, B, K]
            if group.relaxation == "soft":
                parts.append(softmax(perturbed / t))  # [Rg, B, K]; no argmax needed
                continue
            index = perturbed.argmax(dim=-1)  # the exact categorical sample, [Rg, B]
            vertex = one_hot(index, K, lg.dtype)  # [Rg, B, K]
            if not train or group.relaxation == "reinforce":  # reinforce: the sample carries no gradient
                y = vertex
            elif group.relaxation == "hard":
                y = straight_through(vertex, softmax(perturbed / t))
            else:  # gumbel_rao
                k = self.config.gumbel_rao_k
                e = carver.take(k, B, K).transpose(0, 1)  # ~Exp(1), [k, Rg, B, K]
                cond = conditional_gumbel(lg, index, num_samples=k, exponentials=e)  # [k, Rg, B, K]
                surrogate = softmax((lg + cond) / t).mean(dim=0)  # [Rg, B, K]
                y = straight_through(vertex, surrogate)
            parts.append(y)
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        return y, logits

    def _real_index(self, carvers: list[_Carver]) -> Tensor:
        """The categories of the real samples [R, B]: draws from each replica's target, or its stream."""
        u = _take_all(carvers, self.B)  # [R, B]
        u = torch.exp(-u).clamp_min(torch.finfo(u.dtype).tiny)  # ~U(0, 1]
        index = torch.searchsorted(self._target_cdf, u.contiguous())  # [R, B]
        if self._stream_replicas:
            offsets = torch.arange(self.B)
            for r, stream in zip(self._stream_replicas, self._streams):
                pos = (self.stream_pos[r] + offsets) % stream.numel()
                index[r] = stream[pos.to(stream.device)]  # arrival order, cycling
                self.stream_pos[r] = (self.stream_pos[r] + self.B) % stream.numel()
        return index.clamp_max(self.K - 1)

    def _next_carvers(self) -> list[_Carver]:
        """One step's random numbers: each group's next row, to cut every draw of the step from."""
        return [_Carver(g.next_row(self.generators)) for g in self.groups]

    def _d_inputs(self, carvers: list[_Carver], tau: Tensor) -> tuple[Tensor, Tensor, int]:
        """The discriminator step's inputs x [R, n + m, K] (n real rows, then m fake rows), the loss
        weight of each row [R, n + m], and n.

        Real samples are one-hots, and so are the fake ones of every relaxation but soft: B of them
        take at most K distinct values. When K < B such a half is fed as the K unit vectors, each
        weighted by how often it was drawn (count / B): the same loss and gradient as B rows weighted
        1 / B, from K rows instead of B."""
        B, K = self.B, self.K
        index = self._real_index(carvers)  # [R, B]
        if self.distinct_rows:
            ones = torch.ones(index.shape, dtype=self.dtype, device=self.device)  # [R, B]
            counts = torch.zeros(self.R, K, dtype=self.dtype, device=self.device).scatter_add_(1, index, ones)  # [R, K]
            real, real_w = self._unit_rows(), counts / B  # [R, K, K], [R, K]
        else:
            real, real_w = one_hot(index, K, self.dtype), self._uniform_weights()  # [R, B, K], [R, B]
        eps = self.config.label_smoothing
        if eps > 0:
            real = real * (1.0 - eps) + eps / K
        with torch.no_grad():
            fake, _ = self._fake(carvers, tau, train=False)  # [R, B, K]
        if self.distinct_rows and self._vertex_fakes:
            fake, fake_w = self._unit_rows(), fake.sum(dim=1) / B  # [R, K, K], [R, K]
        else:
            fake_w = self._uniform_weights()  # [R, B]
        return torch.cat([real, fake], dim=1), torch.cat([real_w, fake_w], dim=1), real.shape[1]

    def _unit_rows(self) -> Tensor:
        return torch.eye(self.K, dtype=self.dtype, device=self.device).expand(self.R, self.K, self.K)  # [R, K, K]

    def _uniform_weights(self) -> Tensor:
        return torch.full((self.R, self.B), 1.0 / self.B, dtype=self.dtype, device=self.device)  # [R, B]

    # ------------------------------------------------------------------ training

    def train_step(self) -> None:
        """One outer step: a discriminator step, then g_steps generator steps, for every replica."""
        carvers = self._next_carvers()
        tau = self.tau()  # [R]
        # 1. discriminator
        x, weights, n_real = self._d_inputs(carvers, tau)  # [R, n + m, K], [R, n + m]
        d_loss, grads = self._disc_step(x, weights, n_real)  # [R], grads of its sum
        for p, g in zip(self.disc_params, grads):
            p.grad = g
        self.opt_d.step()
        # 2. generator, gradients w.r.t. generator parameters only
        g_loss_total = torch.zeros_like(d_loss)
        for _ in range(self.config.g_steps):
            g_loss, surrogate = self._generator_loss(carvers, tau)
            grads = torch.autograd.grad(surrogate.sum(), self.gen_params)
            for p, g in zip(self.gen_params, grads):
                p.grad = g
            self.opt_g.step()
            g_loss_total += g_loss.detach()
        with torch.no_grad():
            self.loss_sums[0] += d_loss.detach()
            self.loss_sums[1] += g_loss_total / self.config.g_steps
            self.loss_counts += 1
        self.step += 1

    def _disc_step(self, x: Tensor, weights: Tensor, n_real: int) -> tuple[Tensor, list[Tensor]]:
        """D loss [R] on x [R, n + m, K] (n real rows, then m fake rows, weighted: see _d_inputs) and
        its gradients w.r.t. D's parameters.

        Forward and backward run chunk by chunk, so that a chunk's activations are still in cache
        when its backward reads them."""
        params = [p.detach() for p in self.disc_params]
        chunks = self._chunks(x.shape[1])
        if len(chunks) == 1:  # no slicing and copying: they cost a small population ~10% of its step
            return _d_pass(x, params, weights, n_real)
        grads = [torch.empty_like(p) for p in params]
        losses = []
        for sl in chunks:
            loss, chunk_grads = _d_pass(x[sl], [p[sl] for p in params], weights[sl], n_real)  # [r]
            for full, g in zip(grads, chunk_grads):
                full[sl] = g
            losses.append(loss)
        return torch.cat(losses), grads

    def _disc_on_fake(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """softplus(-D(y)) per sample [R, B] (no gradient), and a surrogate [R] whose gradient w.r.t.
        the generator equals that of its mean over the batch.

        dloss/dy is computed by hand, chunk by chunk (see _disc_step), and then sent through the
        sampling graph: the gradient of sum(y * dloss/dy) is the loss's."""
        if self.distinct_rows and self._vertex_fakes:
            per_sample, grad_y = self._disc_on_vertices(y)
        else:
            per_sample, grad_y = self._disc_on_samples(y)
        if grad_y is None:  # reinforce: the sampler carries no gradient
            return per_sample, per_sample.mean(dim=1)
        return per_sample, (y * grad_y).sum(dim=(1, 2))

    def _disc_on_samples(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """softplus(-D(y)) per sample [R, B] and dloss/dy [R, B, K] (None when y needs no gradient)."""
        params = [p.detach() for p in self.disc_params]
        y_in = y.detach()
        chunks = self._chunks(self.B)
        if len(chunks) == 1:
            return _g_pass(y_in, params, self.B, inputs=y.requires_grad)  # [R, B], [R, B, K]
        per_sample = torch.empty(self.R, self.B, dtype=y.dtype, device=y.device)  # [R, B]
        grad_y = torch.empty_like(y_in) if y.requires_grad else None  # [R, B, K]
        for sl in chunks:
            per_sample[sl], g = _g_pass(y_in[sl], [p[sl] for p in params], self.B, inputs=y.requires_grad)
            if g is not None:
                grad_y[sl] = g
        return per_sample, grad_y

    def _disc_on_vertices(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """_disc_on_samples for samples whose values are one-hots (every relaxation but soft): D and
        its input gradient at the K unit vectors, gathered to the B samples (cheaper when K < B)."""
        index = y.detach().argmax(dim=-1)  # [R, B]
        params = [p.detach() for p in self.disc_params]
        f, grad_units = _g_pass(self._unit_rows(), params, 1, inputs=y.requires_grad)  # [R, K], [R, K, K]
        per_sample = f.gather(1, index)  # [R, B]
        if grad_units is None:
            return per_sample, None
        return per_sample, grad_units.gather(1, index.unsqueeze(-1).expand(-1, -1, self.K)) / self.B  # [R, B, K]

    def _generator_loss(self, carvers: list[_Carver], tau: Tensor) -> tuple[Tensor, Tensor]:
        """Per-replica G loss [R] and a surrogate [R] whose gradient w.r.t. the generator is the one
        its relaxation estimates."""
        y, logits = self._fake(carvers, tau, train=True)  # [R, B, K]
        per_sample, surrogate = self._disc_on_fake(y)  # [R, B], [R]
        loss = per_sample.mean(dim=1)  # [R]
        for group in self.groups:
            if group.relaxation != "reinforce":
                continue
            sl = slice(group.start, group.stop)
            f = per_sample[sl]  # [Rg, B]
            baseline = (f.sum(dim=1, keepdim=True) - f) / (self.B - 1)  # leave-one-out, [Rg, B]
            log_p = (torch.log_softmax(logits[sl], dim=-1) * y[sl]).sum(dim=-1)  # log p(z), [Rg, B]
            score_loss = ((f - baseline) * log_p).mean(dim=1)  # [Rg]
            surrogate = torch.cat([surrogate[: group.start], score_loss, surrogate[group.stop :]])
        return loss, surrogate

    def train(self, num_steps: int, callback: Callable[[int], None] | None = None) -> None:
        for _ in range(num_steps):
            self.train_step()
            if callback is not None:
                callback(self.step)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def probabilities(self) -> Tensor:
        """The generator's distribution p [R, K] (exact for free logits, Monte Carlo for the MLP)."""
        if self.config.generator == "logits":
            return torch.softmax(self.gen_params[0], dim=-1)
        logits = self.generator_logits(self._eval_noise(self.config.eval_samples))  # [R, S, K]
        return torch.softmax(logits, dim=-1).mean(dim=1)

    def _eval_noise(self, n: int) -> Tensor:
        z = torch.randn(self.R, n, self.config.gen_noise_dim, generator=self.eval_generator, dtype=self.dtype, device=self.device)
        return z  # ~N(0, 1), [R, n, Z]

    def _eval_exponentials(self, *shape: int) -> Tensor:
        return torch.empty(*shape, dtype=self.dtype, device=self.device).exponential_(generator=self.eval_generator)

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Every metric of DESIGN.md "Metrics" for every replica (see study.evaluation)."""
        cfg = self.config
        tau = self.tau()  # [R]
        p = self.probabilities()  # [R, K]
        q = self.target_probs  # [R, K]
        metrics: dict[str, Tensor] = {"tau": tau}
        counts = self.loss_counts.clamp_min(1)
        metrics["loss/d"] = self.loss_sums[0] / counts[0]
        metrics["loss/g"] = self.loss_sums[1] / counts[1]
        metrics.update(fit_metrics(p, q))
        metrics.update(self._sample_metrics(tau, p))
        probes = self._probe_metrics(tau, "current")
        for ladder_tau in cfg.probe_taus:
            probes += self._probe_metrics(torch.full_like(tau, ladder_tau), "ladder")
        finite = self.finite_replicas()  # [R]
        if self.device.type == "cpu":
            release_freed_memory()  # the probes' memory, which training does not reuse
        self.loss_sums.zero_()
        self.loss_counts.zero_()
        return Evaluation(step=self.step, seeds=list(self.seeds), metrics=metrics, probs=p, diverged=~finite, probes=probes)

    @torch.no_grad()
    def finite_replicas(self) -> Tensor:
        """[R] bool: every parameter of the replica is finite (False once it has diverged)."""
        params = [p.flatten(1) for p in (*self.gen_params, *self.disc_params)]
        return torch.stack([torch.isfinite(p).all(dim=1) for p in params]).all(dim=0)

    def _sample_metrics(self, tau: Tensor, p: Tensor) -> dict[str, Tensor]:
        """vertex_gap = E[1 - max_k y_k]; mean_bias = ||E[y] - p||_1 with E[onehot(argmax)] = p as
        a control variate (same noise), which removes most of the Monte Carlo noise."""
        S, K = self.config.eval_samples, self.K
        if self.config.generator == "logits":
            logits = self.gen_params[0].unsqueeze(1).expand(-1, S, K)  # [R, S, K]
        else:
            logits = self.generator_logits(self._eval_noise(S))  # [R, S, K]
        perturbed = logits + gumbel_from_exponential(self._eval_exponentials(self.R, S, K))  # [R, S, K]
        vertex = one_hot(perturbed.argmax(dim=-1), K, self.dtype)  # [R, S, K]
        soft = softmax(perturbed / tau.view(-1, 1, 1))  # [R, S, K]
        is_soft = (self.relaxation_code == RELAXATION_CODES["soft"]).view(-1, 1, 1)
        emitted = torch.where(is_soft, soft, vertex)  # [R, S, K]
        return {
            "sample/vertex_gap": (1.0 - emitted.max(dim=-1).values).mean(dim=1),
            "sample/mean_bias": (emitted - vertex).mean(dim=1).abs().sum(dim=-1),
        }

    def _probe_metrics(self, tau: Tensor, source: str) -> list[ProbeResult]:
        """Each probed estimator against the exact gradient of E[G loss] w.r.t. the logits."""
        cfg = self.config
        if cfg.generator == "logits":
            logits = self.gen_params[0].detach()  # [R, K]
            tau_b = tau.view(-1, 1)  # [R, 1]
            f = lambda y: F.softplus(-self.disc_logits(y, replica_dim=-2))  # [..., R, K] -> [..., R]  # noqa: E731
        else:
            logits = self.generator_logits(self._eval_noise(cfg.probe_points)).detach()  # [R, P, K]
            tau_b = tau.view(-1, 1, 1)  # [R, 1, 1]
            f = lambda y: F.softplus(-self.disc_logits(y, replica_dim=-3))  # [..., R, P, K] -> [..., R, P]  # noqa: E731
        exact = exact_gradient(logits, f)  # [R, (P,) K]
        out: list[ProbeResult] = []
        for name in cfg.probe_estimators:
            options = {"k": cfg.gumbel_rao_k} if name == "gumbel_rao" else {}
            with torch.enable_grad():
                est = estimate_gradients(
                    name, logits, f, tau=tau_b, num_estimates=cfg.probe_estimates,
                    samples_per_estimate=cfg.probe_samples, generator=self.eval_generator, **options,
                )  # [N, R, (P,) K]
            stats = gradient_stats(est, exact)  # each [R, (P,)]
            per_replica = {stat: v if v.ndim == 1 else v.nanmean(dim=1) for stat, v in stats.items()}  # [R]
            per_replica["n"] = torch.full((self.R,), float(cfg.probe_estimates), dtype=self.dtype, device=self.device)
            out.append(ProbeResult(name, source, tau, per_replica))
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically: parameters, optimizers, RNG, step."""
        return {
            "step": self.step,
            "seeds": list(self.seeds),
            "gen_params": [p.detach().cpu().clone() for p in self.gen_params],
            "disc_params": [p.detach().cpu().clone() for p in self.disc_params],
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": [g.get_state() for g in self.generators],
            "eval_rng": self.eval_generator.get_state(),
            # Not the random blocks themselves (megabytes): the states that redraw them.
            "block_states": [list(g.block_states) for g in self.groups],
            "cursors": [g.cursor for g in self.groups],
            "stream_pos": self.stream_pos.clone(),
            "loss_sums": self.loss_sums.cpu().clone(),
            "loss_counts": self.loss_counts.cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["seeds"]) != list(self.seeds):
            raise ValueError(f"checkpoint is for seeds {state['seeds']}, this population has {self.seeds}")
        with torch.no_grad():
            for p, v in zip(self.gen_params + self.disc_params, state["gen_params"] + state["disc_params"]):
                p.copy_(v)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for group, states, cursor in zip(self.groups, state["block_states"], state["cursors"]):
            if states:  # redraw the block in use at the checkpoint, then stand where it stood
                for r, s in zip(range(group.start, group.stop), states):
                    self.generators[r].set_state(s)
                group.refill(self.generators)
            group.cursor = int(cursor)
        for g, s in zip(self.generators, state["rng"]):
            g.set_state(s)
        self.eval_generator.set_state(state["eval_rng"])
        self.stream_pos.copy_(state["stream_pos"])
        self.loss_sums.copy_(state["loss_sums"])
        self.loss_counts.copy_(state["loss_counts"])
        self.step = int(state["step"])


def fit_metrics(p: Tensor, q: Tensor) -> dict[str, Tensor]:
    """Total variation, Jensen-Shannon (nats) and KL(q || p) between target q and model p, [R, K] -> [R]."""

    def kl(a: Tensor, b: Tensor) -> Tensor:
        terms = torch.where(a > 0, a * (torch.log(a) - torch.log(b)), torch.zeros_like(a))
        return terms.sum(dim=-1)

    m = 0.5 * (p + q)
    return {
        "fit/tv": 0.5 * (p - q).abs().sum(dim=-1),
        "fit/js": 0.5 * kl(q, m) + 0.5 * kl(p, m),
        "fit/kl": kl(q, p),
    }
