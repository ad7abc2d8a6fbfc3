"""R replicas of the toy GAN as stacked tensors: one batched step trains every seed of a trial.

Shapes: R replicas, B batch, K categories, Z generator noise, H hidden width.

- Generator: free logits theta [R, K] (the original toy), or an MLP noise [R, B, Z] -> logits
  [R, B, K] with weights [R, Z, H], [R, H, K]. Its samples and their gradient are those of the
  trial's relaxation: the estimator of study.estimators that the probes measure under that name.
- Discriminator: logistic regression or an MLP, forward and backward by hand (study.discriminator).
- Non-saturating GAN loss: D minimises softplus(-D(real)) + softplus(D(fake)); G minimises
  softplus(-D(fake)). Each outer step is one discriminator step, then `g_steps` generator steps.
- Losses are summed over replicas, so each replica's gradient is that of its own loss, and one
  Adam over the stacked tensors equals R independent Adams (Adam is elementwise).
- The D step's one-hot halves (the real samples; the fake ones too unless the relaxation is soft)
  take at most K distinct values, so when K < B they are fed as the K unit vectors weighted by
  their counts: the same loss and gradient from K rows instead of B (`discriminator_inputs`). For the same
  reason a G step with one-hot samples evaluates D at the K vertices and gathers.
- The relaxation, the temperature schedule and the target are the trial's: the replicas differ in
  their seed only.

Reproducibility: replica r owns a torch.Generator seeded with its seed, from which every number
of its training draws comes (study.random_blocks, in the layout of `step_layout`); its initial
parameters come from a CPU generator seeded the same way. So replica r of a population follows
the same trajectory as a population of that seed alone. Evaluation (study.evaluation) draws from
one separate generator, so evaluating never perturbs training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from study import discriminator
from study.allocator import release_freed_memory, reuse_freed_memory
from study.config import TrialConfig
from study.estimators import ESTIMATORS
from study.evaluation import Evaluation, config_options, evaluate_population
from study.gumbel import one_hot
from study.random_blocks import RandomBlocks, StepLayout, StepNumbers, normal_from_exponentials
from study.rebar import control_generator_loss, make_control
from study.targets import parse_target

__all__ = ["Population", "discriminator_inputs"]

_EVAL_SEED_OFFSET = 0x5EED_E7A1  # the evaluation RNG's seed is seeds[0] + this


def _uniform_init(shape: tuple[int, ...], fan_in: int, rng: torch.Generator, dtype: torch.dtype) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default range
    return (torch.rand(shape, generator=rng, dtype=dtype) * 2.0 - 1.0) * bound


def init_params(config: TrialConfig, seeds: list[int], dtype: torch.dtype, device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """The stacked parameters [R, ...] of the generators and the discriminators, replica r's drawn
    from a CPU generator seeded with seeds[r] (so the same on any device), requiring grad."""
    R, K = len(seeds), config.categories
    if config.generator == "logits":
        shapes_g = [((K,), 0)]
    else:
        Z, H = config.gen_noise_dim, config.gen_hidden
        shapes_g = [((Z, H), Z), ((1, H), Z), ((H, K), H), ((1, K), H)]
    widths = [K] + ([config.disc_width] * config.disc_depth if config.discriminator == "mlp" else []) + [1]
    shapes_d = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        shapes_d += [((fan_in, fan_out), fan_in), ((1, fan_out), fan_in)]
    gen = [torch.empty(R, *shape, dtype=dtype) for shape, _ in shapes_g]
    disc = [torch.empty(R, *shape, dtype=dtype) for shape, _ in shapes_d]
    for r, seed in enumerate(seeds):
        init_rng = torch.Generator().manual_seed(seed)
        for p, (shape, fan_in) in zip(gen, shapes_g):
            if config.generator == "logits":
                fill = {"ones": torch.ones, "zeros": torch.zeros}.get(config.logit_init)
                p[r] = fill(shape, dtype=dtype) if fill else torch.randn(shape, generator=init_rng, dtype=dtype)
            else:
                p[r] = _uniform_init(shape, fan_in, init_rng, dtype)
        for p, (shape, fan_in) in zip(disc, shapes_d):
            p[r] = _uniform_init(shape, fan_in, init_rng, dtype)
    to_device = lambda ps: [p.to(device).requires_grad_(True) for p in ps]  # noqa: E731
    return to_device(gen), to_device(disc)


class Population:
    """R replicas of (generator, discriminator) trained in lockstep."""

    def __init__(self, config: TrialConfig, seeds: list[int], *, device: torch.device | str = "cpu", distinct_rows: bool = True):
        """`distinct_rows=False` feeds the D step all 2B rows even when K < B (see discriminator_inputs): the
        same training, slower; for benchmarks and tests."""
        if not seeds:
            raise ValueError("a population needs at least one seed")
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cpu":
            reuse_freed_memory()  # every step frees and reallocates its activations
        self.dtype = getattr(torch, config.dtype)
        self.seeds = list(seeds)
        self.R, self.K, self.B = len(seeds), config.categories, config.batch_size
        self.schedule = config.schedule_for()  # validated here as in config checks; runs from the tau anchor
        self.tau_anchor = (0, config.tau0)  # (step, tau) the schedule starts from (see set_tau_anchor)
        self.estimator = ESTIMATORS[config.relaxation]
        if not self.estimator.info.trains:
            raise ValueError(f"relaxation {config.relaxation!r} is a probe reference, not a training estimator")
        self.estimator_options = config_options(config, config.relaxation)
        self.target = parse_target(config.target, self.K)
        self.target_probs = self.target.probs.to(dtype=self.dtype, device=self.device).expand(self.R, self.K)  # [R, K]
        cdf = self.target.probs.to(dtype=self.dtype, device=self.device).cumsum(dim=-1)
        # One row per replica: searchsorted is faster with a row per row of values than with one shared row.
        self._target_cdf = (cdf / cdf[-1]).expand(self.R, self.K).contiguous()  # [R, K], last entry exactly 1
        self._stream = None if self.target.stream is None else self.target.stream.to(self.device)
        self.stream_pos = torch.zeros(self.R, dtype=torch.long)  # next index into the stream, per replica

        self.rngs = [torch.Generator(device=self.device).manual_seed(int(s)) for s in self.seeds]
        self.eval_rng = torch.Generator(device=self.device).manual_seed(int(self.seeds[0]) + _EVAL_SEED_OFFSET)
        self.gen_params, self.disc_params = init_params(config, self.seeds, self.dtype, self.device)
        # One fused kernel per optimizer step over the stacked tensors (elementwise, so replicas stay independent).
        self.opt_g = torch.optim.Adam(self.gen_params, lr=config.lr_g, fused=True)
        self.opt_d = torch.optim.Adam(self.disc_params, lr=config.lr_d, fused=True)
        self.random_blocks = RandomBlocks(self.rngs, self.step_layout(), self.dtype, self.device)
        self.distinct_rows = distinct_rows and self.K < self.B  # one-hot halves of the D batch as K weighted rows
        self.vertex_fakes = self.estimator.one_hot  # G step: f only at one-hots, so D at the K vertices suffices
        self.vertex_emits = self.estimator.emits_one_hot  # D step: the fakes shown are one-hots
        self.control = make_control(config, self.R, self.K, self.dtype, self.device)  # REBAR / RELAX: adapted per replica
        self.step = 0
        self.loss_sums = torch.zeros(2, self.R, dtype=self.dtype, device=self.device)  # [d, g] since the last evaluation
        self.loss_counts = torch.zeros(2, dtype=self.dtype, device=self.device)

    def step_layout(self) -> StepLayout:
        """What one training step draws per replica, in order: the real samples' uniforms, then
        the D step's fakes (generator noise, the estimator's draws for the samples' values), then
        each G step's fakes (generator noise, all the estimator's draws)."""
        cfg, shape = self.config, (self.B, self.K)
        noise = [("noise", (2, self.B, cfg.gen_noise_dim))] if cfg.generator == "mlp" else []
        d_draws = self.estimator.noise_segments(shape, emit_only=True, **self.estimator_options)
        segments = [("real", (self.B,))] + [(f"d/{name}", s) for name, s in noise + d_draws]
        g_draws = self.estimator.noise_segments(shape, **self.estimator_options)
        for i in range(cfg.g_steps):
            segments += [(f"g{i}/{name}", s) for name, s in noise + g_draws]
        return StepLayout(segments)

    # ------------------------------------------------------------------ forward passes

    def generator_logits(self, noise: Tensor | None = None) -> Tensor:
        """Logits [R, 1, K] (free logits) or [R, B, K] from noise [R, B, Z] (MLP)."""
        if self.config.generator == "logits":
            return self.gen_params[0].unsqueeze(1)  # [R, 1, K]
        w1, b1, w2, b2 = self.gen_params
        h = torch.relu(torch.baddbmm(b1, noise, w1))  # [R, B, H]
        return torch.baddbmm(b2, h, w2)  # [R, B, K]

    def tau(self, step: int | None = None) -> Tensor:
        """The trial's temperature at `step` (default: the current step) for every replica, [R]:
        the schedule started at the tau anchor, `step - anchor_step` steps on."""
        if self.control is not None:  # REBAR / RELAX: their own adapted temperature, not the schedule
            return self.control.temperature()
        step = self.step if step is None else step
        return self.schedule.tensor(step - self.tau_anchor[0], (self.R,), dtype=self.dtype, device=self.device)

    def set_tau_anchor(self, step: int, tau: float) -> None:
        """Start the trial's schedule (its kind, anneal_rate, tau_min, interval) again at `step`
        from temperature `tau`. A population starts at (0, tau0); PBT moves the anchor when a trial
        continues from another's checkpoint with a perturbed temperature or rate."""
        self.schedule = self.config.schedule_for(tau0=float(tau))  # validates tau against tau_min
        self.tau_anchor = (int(step), float(tau))

    def _disc_detached(self) -> list[Tensor]:
        return [p.detach() for p in self.disc_params]

    # ------------------------------------------------------------------ training

    def train(self, num_steps: int, callback: Callable[[int], None] | None = None) -> None:
        for _ in range(num_steps):
            self.train_step()
            if callback is not None:
                callback(self.step)

    def train_step(self) -> None:
        """One outer step: a discriminator step, then g_steps generator steps, for every replica."""
        numbers = self.random_blocks.next_step()
        tau = self.tau()  # [R]
        # 1. discriminator
        x, weights, n_real = discriminator_inputs(self, numbers, tau)  # [R, n + m, K], [R, n + m]
        d_loss, grads = discriminator.d_step(x, self._disc_detached(), weights, n_real)  # [R], grads of its sum
        for p, grad in zip(self.disc_params, grads):
            p.grad = grad
        self.opt_d.step()
        # 2. generator, gradients w.r.t. generator parameters only
        g_loss_total = torch.zeros_like(d_loss)
        for _ in range(self.config.g_steps):
            g_loss, surrogate = self._generator_loss(numbers, tau)  # [R], [R]
            grads = torch.autograd.grad(surrogate.sum(), self.gen_params)
            for p, grad in zip(self.gen_params, grads):
                p.grad = grad
            self.opt_g.step()
            g_loss_total += g_loss.detach()
        numbers.finish()
        with torch.no_grad():
            self.loss_sums[0] += d_loss.detach()
            self.loss_sums[1] += g_loss_total / self.config.g_steps
            self.loss_counts += 1
        self.step += 1

    def _generator_noise(self, numbers: StepNumbers) -> Tensor | None:
        if self.config.generator != "mlp":
            return None
        e = numbers.take("noise", (2, self.B, self.config.gen_noise_dim))  # ~Exp(1), [R, 2, B, Z]
        return normal_from_exponentials(e[:, 0], e[:, 1])  # ~N(0, 1), [R, B, Z]

    def _unit_rows(self) -> Tensor:
        return torch.eye(self.K, dtype=self.dtype, device=self.device).expand(self.R, self.K, self.K)  # [R, K, K]

    def _uniform_weights(self) -> Tensor:
        return torch.full((self.R, self.B), 1.0 / self.B, dtype=self.dtype, device=self.device)  # [R, B]

    def _generator_loss(self, numbers: StepNumbers, tau: Tensor) -> tuple[Tensor, Tensor]:
        """Per-replica G loss [R] and a surrogate [R] whose gradient w.r.t. the generator is the
        one the relaxation estimates (its estimator's rule, with dloss/dy from the hand-written D)."""
        logits = self.generator_logits(self._generator_noise(numbers))  # [R, 1|B, K]
        estimator, shape = self.estimator, (self.R, self.B, self.K)
        if self.control is not None:
            return control_generator_loss(estimator, self.control, logits, numbers.exponentials, self._disc_detached(), shape, self.estimator_options)
        draw = estimator.draw(logits.detach(), numbers.exponentials, shape, **self.estimator_options)
        y = estimator.sample(logits, draw, tau.view(-1, 1, 1))  # [*points, R, B, K]
        per_sample, grad_y = self._fake_loss(y, draw.index, inputs=estimator.pathwise)  # [*points, R, B], [*points, R, B, K] | None
        own = per_sample[(0,) * (y.ndim - 3)]  # point 0 is the sample itself: its loss, [R, B]
        return own.mean(dim=1), estimator.surrogate(logits, y, per_sample, grad_y, draw)

    def _fake_loss(self, y: Tensor, index: Tensor | None, *, inputs: bool) -> tuple[Tensor, Tensor | None]:
        """softplus(-D(y)) per sample [*points, R, B] and, when `inputs`, the gradient of its batch
        mean w.r.t. y: at the K vertices, gathered, when the samples are one-hots and K < B."""
        params = self._disc_detached()
        vertices = discriminator.vertex_losses(params, inputs=inputs) if self.distinct_rows and self.vertex_fakes else None
        return discriminator.losses_at_samples(y, index, params, points=y.ndim - 3, samples=self.B, inputs=inputs, vertices=vertices)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> Evaluation:
        """Every metric of DESIGN.md "Metrics" for every replica (study.evaluation); starts the
        next period of the loss averages."""
        evaluation = evaluate_population(self)
        if self.device.type == "cpu":
            release_freed_memory()  # the probes' memory, which training does not reuse
        self.loss_sums.zero_()
        self.loss_counts.zero_()
        return evaluation

    @torch.no_grad()
    def finite_replicas(self) -> Tensor:
        """[R] bool: every parameter of the replica is finite (False once it has diverged)."""
        params = [p.flatten(1) for p in (*self.gen_params, *self.disc_params)]
        return torch.stack([torch.isfinite(p).all(dim=1) for p in params]).all(dim=0)

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
            "rng": [rng.get_state() for rng in self.rngs],
            "eval_rng": self.eval_rng.get_state(),
            # Not the random block itself (megabytes): the states that redraw it. One list per block
            # buffer (a population has one).
            "block_states": [list(self.random_blocks.block_states)],
            "cursors": [self.random_blocks.cursor],
            "stream_pos": self.stream_pos.clone(),
            "loss_sums": self.loss_sums.cpu().clone(),
            "loss_counts": self.loss_counts.cpu().clone(),
            "control": None if self.control is None else self.control.state_dict(),
            "tau_anchor": [int(self.tau_anchor[0]), float(self.tau_anchor[1])],
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["seeds"]) != list(self.seeds):
            raise ValueError(f"checkpoint is for seeds {state['seeds']}, this population has {self.seeds}")
        if len(state["block_states"]) != 1:
            raise ValueError(f"checkpoint has {len(state['block_states'])} random-block buffers; a population has one")
        with torch.no_grad():
            for p, v in zip(self.gen_params + self.disc_params, state["gen_params"] + state["disc_params"]):
                p.copy_(v)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        # The learning rates are the config's: PBT may have perturbed them since the checkpoint.
        for opt, lr in ((self.opt_g, self.config.lr_g), (self.opt_d, self.config.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr
        self.random_blocks.restore(state["block_states"][0], state["cursors"][0])
        for rng, s in zip(self.rngs, state["rng"]):
            rng.set_state(s)
        self.eval_rng.set_state(state["eval_rng"])
        self.stream_pos.copy_(state["stream_pos"])
        self.loss_sums.copy_(state["loss_sums"])
        self.loss_counts.copy_(state["loss_counts"])
        if self.control is not None:
            self.control.load_state_dict(state["control"])
        self.step = int(state["step"])
        step, tau = state.get("tau_anchor", (0, self.config.tau0))  # older checkpoints: the schedule from step 0
        self.set_tau_anchor(step, tau)


# ---------------------------------------------------------------------- the discriminator step's inputs


def _real_index(self: Population, numbers: StepNumbers) -> Tensor:
    """The categories of the real samples [R, B]: draws from the target, or its stream."""
    u = numbers.take("real", (self.B,))  # ~Exp(1), [R, B]
    u = torch.exp(-u).clamp_min(torch.finfo(u.dtype).tiny)  # ~U(0, 1]
    index = torch.searchsorted(self._target_cdf, u.contiguous())  # [R, B]
    if self._stream is not None:
        n = self._stream.numel()
        pos = (self.stream_pos.unsqueeze(1) + torch.arange(self.B)) % n  # [R, B]
        index = self._stream[pos.to(self._stream.device)]  # arrival order, cycling
        self.stream_pos = (self.stream_pos + self.B) % n
    return index.clamp_max(self.K - 1)

def discriminator_inputs(self: Population, numbers: StepNumbers, tau: Tensor) -> tuple[Tensor, Tensor, int]:
    """The discriminator step's inputs x [R, n + m, K] (n real rows, then m fake rows), the loss
    weight of each row [R, n + m], and n.

    Real samples are one-hots, and so are the fake ones of every relaxation but soft: B of them
    take at most K distinct values. When K < B such a half is fed as the K unit vectors, each
    weighted by how often it was drawn (count / B): the same loss and gradient as B rows weighted
    1 / B, from K rows instead of B."""
    B, K = self.B, self.K
    index = _real_index(self, numbers)  # [R, B]
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
        logits = self.generator_logits(self._generator_noise(numbers))  # [R, 1|B, K]
        draw = self.estimator.draw(logits, numbers.exponentials, (self.R, B, K), emit_only=True, **self.estimator_options)
        fake = self.estimator.emit(logits, draw, tau.view(-1, 1, 1))  # [R, B, K]
    if self.distinct_rows and self.vertex_emits:
        fake, fake_w = self._unit_rows(), fake.sum(dim=1) / B  # [R, K, K], [R, K]
    else:
        fake_w = self._uniform_weights()  # [R, B]
    return torch.cat([real, fake], dim=1), torch.cat([real_w, fake_w], dim=1), real.shape[1]
