"""Population: replicas equal their runs alone, training equals its estimators, checkpoint determinism."""

import dataclasses

import pytest
import torch

from study import discriminator
from study.config import TrialConfig
from study.population import Population, discriminator_inputs
from study.train import Trial, load_state, save_state
from study.vocab import ESTIMATORS_INFO, RELAXATIONS

# float64 so that batched matmul vs a single-replica matmul differ only by summation order:
# the tolerance of 1e-6 is far above float64 round-off accumulated over a few hundred steps.
EQUIVALENCE_ATOL = 1e-6

CASES = {
    "logits-logistic-soft": dict(),
    "logits-mlp-hard": dict(discriminator="mlp", disc_width=8, disc_depth=2, relaxation="hard"),
    "mlp-mlp-gumbel_rao": dict(generator="mlp", gen_hidden=8, gen_noise_dim=3, discriminator="mlp", disc_width=8, relaxation="gumbel_rao", gumbel_rao_k=3),
    "logits-reinforce-smoothing": dict(relaxation="reinforce", label_smoothing=0.1, g_steps=2),
    "stream-target": dict(target="stream:{stream}", categories=4),
}


def _config(tmp_path, **overrides) -> TrialConfig:
    stream = tmp_path / "numbers.txt"
    stream.write_text("0 1 1 2\n3 3 3 1\n2\n")
    if "target" in overrides:
        overrides["target"] = overrides["target"].format(stream=stream)
    base = dict(categories=4, target="zipf:s=1.0", dtype="float64", batch_size=8, steps=40, schedule="exponential",
                tau0=1.0, anneal_rate=0.01, tau_min=0.2, lr_g=1e-2, lr_d=1e-2, probe_estimates=50, eval_samples=100)
    base.update(overrides)
    return TrialConfig(**base)


def _params(pop: Population, replica: int) -> list[torch.Tensor]:
    return [p.detach()[replica] for p in (*pop.gen_params, *pop.disc_params)]


def _assert_replica_equals_run_alone(pop: Population, seed: int, cfg: TrialConfig) -> None:
    alone = Population(cfg, [seed])
    alone.train(cfg.steps)
    r = pop.seeds.index(seed)
    for got, want in zip(_params(pop, r), _params(alone, 0)):
        torch.testing.assert_close(got, want, atol=EQUIVALENCE_ATOL, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_replica_equals_single_run(tmp_path, case):
    cfg = _config(tmp_path, **CASES[case])
    seeds = [11, 12, 13]
    pop = Population(cfg, seeds)
    pop.train(cfg.steps)
    for seed in seeds:
        _assert_replica_equals_run_alone(pop, seed, cfg)


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_discriminator_passes_match_one_pass(tmp_path, case, monkeypatch):
    """Large populations run D's forward and backward in chunks of replicas (and send dloss/dy
    through the sampler in a second pass); forcing one replica per chunk must not change training,
    and each replica must still equal its run alone (which takes the one-pass path)."""
    cfg = _config(tmp_path, **CASES[case])
    seeds = [11, 12, 13]
    whole = Population(cfg, seeds)
    whole.train(cfg.steps)
    monkeypatch.setattr(discriminator, "CHUNK_BYTES", 1)  # one replica per chunk
    chunked = Population(cfg, seeds)
    assert len(discriminator.replica_chunks(chunked.disc_params, cfg.batch_size)) == len(seeds)
    chunked.train(cfg.steps)
    for r in range(len(seeds)):
        for got, want in zip(_params(chunked, r), _params(whole, r)):
            torch.testing.assert_close(got, want, atol=EQUIVALENCE_ATOL, rtol=0)
    torch.testing.assert_close(chunked.loss_sums, whole.loss_sums, atol=EQUIVALENCE_ATOL, rtol=0)
    monkeypatch.undo()
    _assert_replica_equals_run_alone(chunked, seeds[1], cfg)


@pytest.mark.parametrize("case", list(CASES))
def test_distinct_one_hot_rows_match_the_full_batch(tmp_path, case):
    """The D step feeds B one-hot samples as K weighted unit vectors when K < B (discriminator_inputs): the
    same loss and gradients as the B rows, so training must not change. CASES have K = 4 < B = 8;
    in the soft case only the real half is one-hot, so only it is reduced."""
    cfg = _config(tmp_path, **CASES[case])
    seeds = [11, 12, 13]
    full = Population(cfg, seeds, distinct_rows=False)
    dedup = Population(cfg, seeds)
    assert dedup.distinct_rows and not full.distinct_rows
    assert dedup.vertex_fakes == (cfg.relaxation != "soft")
    x_full, _, _ = discriminator_inputs(full, full.random_blocks.next_step(), full.tau())
    x_dedup, w_dedup, n_real = discriminator_inputs(dedup, dedup.random_blocks.next_step(), dedup.tau())
    B, K = cfg.batch_size, cfg.categories
    assert x_full.shape[1] == 2 * B
    assert n_real == K and x_dedup.shape[1] == K + (K if dedup.vertex_fakes else B)
    torch.testing.assert_close(w_dedup.sum(dim=1), torch.full((3,), 2.0, dtype=torch.float64))  # each half weighs 1
    full = Population(cfg, seeds, distinct_rows=False)
    dedup = Population(cfg, seeds)
    full.train(cfg.steps)
    dedup.train(cfg.steps)
    for r in range(len(seeds)):
        for got, want in zip(_params(dedup, r), _params(full, r)):
            torch.testing.assert_close(got, want, atol=EQUIVALENCE_ATOL, rtol=0)
    torch.testing.assert_close(dedup.loss_sums, full.loss_sums, atol=EQUIVALENCE_ATOL, rtol=0)


@pytest.mark.parametrize("relaxation", ["hard", "gumbel_rao", "reinforce"])
def test_generator_loss_on_vertices_matches_full_batch(tmp_path, relaxation):
    """The G step evaluates D at the K unit vectors when every sample is a one-hot
    (_disc_on_vertices): the loss and the generator's gradient must equal D on all B samples.
    Checked directly, because Adam would hide a wrongly scaled gradient from a training comparison."""
    cfg = _config(tmp_path, relaxation=relaxation, discriminator="mlp", disc_width=8, gumbel_rao_k=3)
    results = []
    for distinct in (False, True):
        pop = Population(cfg, [5, 6], distinct_rows=distinct)
        numbers, tau = pop.random_blocks.next_step(), pop.tau()
        discriminator_inputs(pop, numbers, tau)  # the D step's draws come first in a step's layout
        loss, surrogate = pop._generator_loss(numbers, tau)
        results.append((loss, torch.autograd.grad(surrogate.sum(), pop.gen_params)))
    (loss_full, grads_full), (loss_dedup, grads_dedup) = results
    # float64: the two differ only by summation order and by ST samples being vertex - s + s, not the vertex
    torch.testing.assert_close(loss_dedup, loss_full, atol=1e-12, rtol=0)
    for got, want in zip(grads_dedup, grads_full):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_different_seeds_differ(tmp_path):
    cfg = _config(tmp_path)
    pop = Population(cfg, [0, 1])
    pop.train(5)
    assert not torch.equal(pop.disc_params[0][0], pop.disc_params[0][1])


@pytest.mark.parametrize("case", ["logits-logistic-soft", "mlp-mlp-gumbel_rao", "stream-target", "logits-reinforce-smoothing"])
def test_checkpoint_restore_is_bit_identical(tmp_path, case):
    """Stop at step s, save, restore into a fresh Trial, continue: every number equals the
    uninterrupted run exactly (CPU, same thread count)."""
    cfg = dataclasses.replace(_config(tmp_path, **CASES[case]), dtype="float32", steps=30, eval_every=10)
    full_rows: list = []
    full = Trial(cfg, 2)
    full.run(lambda ev: full_rows.append(ev.rows(probes=True)))

    first_rows: list = []
    interrupted = Trial(cfg, 2)

    class Stop(Exception):
        pass

    def stop_after_second_eval(ev):
        first_rows.append(ev.rows(probes=True))
        if len(first_rows) == 2:  # evaluations at 0 and 10
            save_state(interrupted, tmp_path / "ckpt")
            raise Stop

    with pytest.raises(Stop):
        interrupted.run(stop_after_second_eval)
    resumed = Trial(cfg, 2)
    load_state(resumed, tmp_path / "ckpt")
    assert resumed.step == 10
    resumed_rows: list = []
    resumed.run(lambda ev: resumed_rows.append(ev.rows(probes=True)))
    assert first_rows + resumed_rows == full_rows  # exact equality of every metric, probes included
    for a, b in zip(resumed.population.gen_params + resumed.population.disc_params, full.population.gen_params + full.population.disc_params):
        assert torch.equal(a, b)


def test_checkpoint_refuses_other_config(tmp_path):
    cfg = _config(tmp_path, steps=5, eval_every=5)
    trial = Trial(cfg, 1)
    trial.run(lambda *a: None)
    save_state(trial, tmp_path / "c")
    other = Trial(dataclasses.replace(cfg, lr_g=0.5, g_steps=cfg.g_steps + 1), 1)  # lr_g may differ (PBT), g_steps not
    with pytest.raises(ValueError, match="g_steps"):
        load_state(other, tmp_path / "c")


def test_evaluate_reports_every_metric(tmp_path):
    cfg = _config(tmp_path, probe_taus=(0.3, 3.0))
    pop = Population(cfg, [0, 1])
    pop.train(3)
    rows = pop.evaluate().rows(probes=True)
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        for key in ("tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias"):
            assert isinstance(row[key], float) and row[key] == row[key], key
        assert len(row["fit/probs"]) == 4 and abs(sum(row["fit/probs"]) - 1) < 1e-9
        for prefix in ("grad", "ladder/0.3", "ladder/3"):
            for est in ("soft", "hard", "gumbel_rao", "reinforce"):
                for stat in ("bias2", "variance", "mse", "cosine", "rel_rmse", "n"):
                    assert f"{prefix}/{est}/{stat}" in row
        assert row["grad/soft/n"] == cfg.probe_estimates
        assert 0 <= row["fit/tv"] <= 1 and 0 <= row["fit/js"] <= 0.6932


def test_fit_metrics_closed_form():
    from study.evaluation import fit_metrics

    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64)
    m = fit_metrics(p, q)
    assert float(m["fit/tv"]) == pytest.approx(0.5, abs=1e-12)
    assert float(m["fit/kl"]) == float("inf")  # q puts mass where p has none
    # JS by hand: M = [3/8, 3/8, 1/4]
    import math

    js = 0.5 * (0.25 * math.log(0.25 / 0.375) * 2 + 0.5 * math.log(0.5 / 0.25)) + 0.5 * (0.5 * math.log(0.5 / 0.375) * 2)
    assert float(m["fit/js"]) == pytest.approx(js, abs=1e-12)


def test_divergence_is_detected(tmp_path):
    from study.train import TrialDiverged

    cfg = _config(tmp_path, lr_g=1e30, lr_d=1e30, steps=20, eval_every=10, dtype="float32")
    trial = Trial(cfg, 2)
    with pytest.raises(TrialDiverged, match="diverged"):
        trial.run(lambda *a: None)


def _reference_discriminator(x, params):
    """The discriminator written with autograd's own ops: what the hand-written pass must equal."""
    h = x
    for i in range(0, len(params), 2):
        h = torch.baddbmm(params[i + 1], h, params[i])
        if i + 2 < len(params):
            h = torch.nn.functional.leaky_relu(h, 0.2)
    return h.squeeze(-1)


def _discriminator_params(widths, gen):
    """Weights and biases ~N(0, 1 / fan_in), so activations stay O(1) and float64 round-off ~1e-15."""
    shapes = [(s, n) for n, m in zip(widths[:-1], widths[1:]) for s in ((3, n, m), (3, 1, m))]
    return [(torch.randn(shape, generator=gen, dtype=torch.float64) / n**0.5).requires_grad_() for shape, n in shapes]


# widths: logistic regression, a narrow input (K <= TRANSPOSED_INPUT_GRAD_MAX_WIDTH: transposed input gradient), a wide one, depth 3
DISCRIMINATORS = [(4, 1), (10, 8, 1), (20, 8, 8, 1), (3, 5, 6, 4, 1)]


@pytest.mark.parametrize("widths", DISCRIMINATORS)
def test_hand_written_discriminator_gradients(widths):
    """discriminator.forward / backward (through DiscriminatorFn) against finite differences,
    float64, for the input and every parameter together, and the forward against the autograd reference."""
    from study.discriminator import DiscriminatorFn

    gen = torch.Generator().manual_seed(sum(widths))
    x = torch.randn(3, 7, widths[0], generator=gen, dtype=torch.float64, requires_grad=True)
    params = _discriminator_params(widths, gen)
    assert torch.autograd.gradcheck(lambda x, *p: DiscriminatorFn.apply(x, *p), (x, *params))
    torch.testing.assert_close(DiscriminatorFn.apply(x, *params), _reference_discriminator(x, params))


@pytest.mark.parametrize("widths", DISCRIMINATORS)
def test_hand_written_d_step_and_g_pass_match_autograd(widths):
    """The training paths, which skip autograd: the D loss with its closed-form dloss/dlogits and
    the parameter gradients (d_pass), and the G pass's per-sample loss and input gradient
    (g_pass), against autograd on the reference discriminator; and nothing unasked is computed."""
    from study.discriminator import backward as _disc_backward
    from study.discriminator import d_pass as _d_pass
    from study.discriminator import forward as _disc_forward
    from study.discriminator import g_pass as _g_pass

    gen = torch.Generator().manual_seed(7 * sum(widths))
    params = _discriminator_params(widths, gen)
    detached = [p.detach() for p in params]
    x = torch.randn(3, 9, widths[0], generator=gen, dtype=torch.float64)
    weights = torch.rand(3, 9, generator=gen, dtype=torch.float64)
    n_real = 4
    loss, grads = _d_pass(x, detached, weights, n_real)
    out = _reference_discriminator(x, params)
    sign = torch.cat([-torch.ones(n_real), torch.ones(9 - n_real)]).to(torch.float64)
    ref = (torch.nn.functional.softplus(sign * out) * weights).sum(dim=1)
    torch.testing.assert_close(loss, ref.detach(), atol=1e-12, rtol=0)
    for got, want in zip(grads, torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    y = torch.rand(3, 9, widths[0], generator=gen, dtype=torch.float64, requires_grad=True)
    per_sample, grad_y = _g_pass(y.detach(), detached, 9, inputs=True)
    f = torch.nn.functional.softplus(-_reference_discriminator(y, detached))
    torch.testing.assert_close(per_sample, f.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_y, torch.autograd.grad(f.mean(dim=1).sum(), y)[0], atol=1e-12, rtol=0)

    out, hs = _disc_forward(y.detach(), detached)
    weight_grads, gx = _disc_backward(torch.ones_like(out), hs, detached, weights=False, inputs=True)
    assert all(g is None for g in weight_grads) and gx is not None
    weight_grads, gx = _disc_backward(torch.ones_like(out), hs, detached, weights=True, inputs=False)
    assert all(g is not None for g in weight_grads) and gx is None


def test_allocator_settings_apply_once_and_respect_the_user(monkeypatch):
    import ctypes.util

    from study import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    assert allocator.reuse_freed_memory() is False  # the user's own glibc settings win
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert allocator.reuse_freed_memory() is False  # decided once per process
    monkeypatch.setattr(allocator, "_applied", None)
    is_glibc = allocator._libc() is not None
    assert allocator.reuse_freed_memory() is is_glibc
    if ctypes.util.find_library("c") and __import__("platform").libc_ver()[0] == "glibc":
        assert is_glibc


_FAULTS_PER_STEP = """
import resource, sys
from study.config import TrialConfig
from study.population import Population
cfg = TrialConfig(discriminator="mlp", disc_width=64, disc_depth=2, batch_size=256, categories=10, target="uniform")
pop = Population(cfg, seeds=list(range(16)))
pop.train(5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
pop.train(10)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_training_steps_reuse_their_memory():
    """Each step's activations ([16, 512, 64] float32 = 2 MiB) come back from the heap instead of
    being faulted in again. With glibc's defaults restored through its environment variables
    (which reuse_freed_memory leaves alone) every step faults them in: 512 pages per MiB."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    def faults(**env) -> float:
        proc = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1], env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return float(proc.stdout.strip())

    tuned = faults()
    default = faults(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert default > 1000, default  # the mechanism is real here: several 2 MiB tensors per step
    assert tuned < default / 20, (tuned, default)


# ---------------------------------------------------------------------------------------------
# One implementation: what trains under a name is what the probe under that name measures


def _g_step_segments(pop: Population, row: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first G step's Exp(1) numbers of one step's row [R, M], by segment name, [R, *shape]."""
    out, offset = {}, 0
    for name, shape in pop.random_blocks.layout.segments:
        n = int(torch.tensor(shape).prod())
        if name.startswith("g0/"):
            out[name[3:]] = row[:, offset : offset + n].reshape(row.shape[0], *shape)
        offset += n
    return out


@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_training_gradient_is_the_estimators_estimate(tmp_path, relaxation, distinct):
    """At fixed noise, a G step's gradient w.r.t. the free logits equals the estimate of
    estimate_gradients(relaxation, samples_per_estimate=B) fed the same Exp(1) numbers: the same
    sampler, the same gradient rule, REINFORCE's leave-one-out baseline over the same B samples.
    With distinct rows the population evaluates D at the K vertices and gathers; without, at the B
    samples; the estimator differentiates f by autograd."""
    from study.discriminator import disc_logits
    from study.estimators import estimate_gradients

    cfg = _config(tmp_path, relaxation=relaxation, discriminator="mlp", disc_width=8, gumbel_rao_k=3)
    pop = Population(cfg, [5, 6, 7], distinct_rows=distinct)
    pop.train(3)  # away from the initial parameters (and, for REBAR / RELAX, from their initial eta, lambda, rho)
    numbers, tau = pop.random_blocks.next_step(), pop.tau()
    control = None if pop.control is None else pop.control.detached()  # the values this step's estimate uses
    segments = _g_step_segments(pop, numbers.row)
    discriminator_inputs(pop, numbers, tau)
    _, surrogate = pop._generator_loss(numbers, tau)
    (trained,) = torch.autograd.grad(surrogate.sum(), pop.gen_params)  # [R, K]

    def replay(name, shape, group_dim):
        # The estimator lays samples out [(k,) N = 1, S = B, R, K] for logits [R, K]; the population [R, (k,) B, K].
        return segments[name].movedim(0, -2).unsqueeze(group_dim)

    logits = pop.gen_params[0].detach()  # [R, K]
    f = lambda y: torch.nn.functional.softplus(-disc_logits(y, pop.disc_params, replica_dim=-2))  # noqa: E731
    options = {"k": 3} if relaxation == "gumbel_rao" else {}
    if control is not None:
        options["control"] = control
    (estimated,) = estimate_gradients(relaxation, logits, f, tau=tau.view(-1, 1), num_estimates=1,
                                      samples_per_estimate=cfg.batch_size, noise=replay, **options)
    assert trained.abs().max() > 1e-6  # a real gradient, not two zeros
    # float64, the same arithmetic up to summation order over the batch (layouts [R, B, K] vs
    # [1, B, R, K]) and to where 1/B is applied: a few ulp of O(1) terms summed over B = 8, so
    # ~1e-15. 1e-12 is far below any real difference (a baseline or a sample apart is O(gradient)).
    torch.testing.assert_close(estimated, trained, rtol=0, atol=1e-12)


def test_step_layout_is_declared_and_enforced(tmp_path):
    """Every draw of a step is carved in the order and shapes of the step's layout; a step that
    draws out of order, or leaves numbers unused, is an error."""
    cfg = _config(tmp_path, relaxation="gumbel_rao", generator="mlp", gen_hidden=8, gen_noise_dim=3, gumbel_rao_k=3, g_steps=2)
    pop = Population(cfg, [1, 2])
    B, K, Z, k = cfg.batch_size, cfg.categories, cfg.gen_noise_dim, cfg.gumbel_rao_k
    layout = pop.random_blocks.layout
    assert [name for name, _ in layout.segments] == [
        "real", "d/noise", "d/gumbel", "g0/noise", "g0/gumbel", "g0/conditional", "g1/noise", "g1/gumbel", "g1/conditional"]
    assert layout.numbers == B + 3 * 2 * B * Z + 3 * B * K + 2 * k * B * K
    with pytest.raises(AssertionError, match="noise"):
        pop.random_blocks.next_step().take("noise", (2, B, Z))  # the real samples come first
    numbers = pop.random_blocks.next_step()
    numbers.take("real", (B,))
    with pytest.raises(AssertionError, match="used"):
        numbers.finish()
    pop.train(2)  # a whole step uses its row exactly


def test_population_builds_and_follows_its_schedule(tmp_path):
    """The population's temperatures come from the trial's Schedule: built (and so validated) at
    construction, evaluated in the population's dtype."""
    with pytest.raises(ValueError, match="tau_min=0.2"):
        Population(_config(tmp_path, tau0=0.1, tau_min=0.2), [0])  # exponential: tau_min > tau0
    cfg = _config(tmp_path, dtype="float32", schedule="stepwise", anneal_interval=7, anneal_rate=0.05, tau_min=0.1)
    pop = Population(cfg, [0, 1])
    schedule = cfg.schedule_for()
    for step in (0, 6, 7, 100, 10**6):
        tau = pop.tau(step)
        assert tau.shape == (2,) and tau.dtype == torch.float32
        assert torch.equal(tau, schedule.tensor(step, (2,), dtype=torch.float32))
        # The float32 evaluation against the float64 one: float32 rounding of exp's argument and
        # result, a few eps32 relative.
        assert float(tau[0]) == pytest.approx(schedule(step), rel=8 * torch.finfo(torch.float32).eps)


def _probe_rows(pop):
    rows = pop.evaluate().rows(probes=True)
    return {row["seed"]: row for row in rows}


def test_probes_measure_the_training_estimators(tmp_path):
    """Each probe's variance is that of the estimate a training step makes (B samples per estimate,
    REINFORCE with its leave-one-out baseline), checked against direct estimates of
    estimate_gradients(samples_per_estimate=B), which equal training's at fixed noise (above).

    z-tests at 4 standard errors (level 6.3e-5 each; 22 comparisons, family level ~1.4e-3; the
    generators are fixed, so the outcome is deterministic). Standard errors of a trace variance:
    the spread of ||g - mean||^2 / sqrt(n), from the direct estimates and, for the probe (N
    single-sample draws, variance / B), from N independent single-sample estimates."""
    from study.discriminator import disc_logits
    from study.estimators import estimate_gradients

    N = 4000
    cfg = _config(tmp_path, discriminator="mlp", disc_width=8, gumbel_rao_k=3, probe_estimates=N, tau0=0.7, anneal_rate=0.0,
                  probe_estimators=PROBED, unordered_set_k=2)
    pop = Population(cfg, [3, 4])
    pop.train(20)
    tau = pop.tau()
    logits = pop.gen_params[0].detach()  # [R, K]
    f = lambda y: torch.nn.functional.softplus(-disc_logits(y, pop.disc_params, replica_dim=-2))  # noqa: E731
    rows = _probe_rows(pop)
    B = cfg.batch_size
    for i, name in enumerate(PROBED):
        options = {"gumbel_rao": {"k": 3}, "unordered_set": {"k": 2}}.get(name, {})
        exact_moments = name == "reinforce" or ESTIMATORS_INFO[name].exact_moments
        gen = torch.Generator().manual_seed(100 + i)
        direct = estimate_gradients(name, logits, f, tau=tau.view(-1, 1), num_estimates=N, samples_per_estimate=B, generator=gen, **options)
        single = estimate_gradients(name, logits, f, tau=tau.view(-1, 1), num_estimates=N, samples_per_estimate=1, generator=gen, **options)
        for r, seed in enumerate(pop.seeds):
            sq = (direct[:, r] - direct[:, r].mean(0)).square().sum(-1)  # [N]
            var_direct, se_direct = float(sq.sum() / (N - 1)), float(sq.std() / N**0.5)
            sq1 = (single[:, r] - single[:, r].mean(0)).square().sum(-1)
            se_probe = float(sq1.std() / N**0.5) / B
            probed = rows[seed][f"grad/{name}/variance"]
            if exact_moments:  # sums over the K categories: exact, so only the direct side is noisy
                se_probe = 0.0
                assert rows[seed][f"grad/{name}/bias2_floor"] == 0.0 and rows[seed][f"grad/{name}/n"] == 0
            if name == "reinforce":
                assert rows[seed][f"grad/{name}/bias2"] == 0.0
            assert abs(probed - var_direct) < Z_LEVEL * (se_direct**2 + se_probe**2) ** 0.5, (name, seed, probed, var_direct)
            # The probe's mean comes from N single-sample draws: bias2_floor = trace / N = variance * B / N.
            if not exact_moments:
                assert rows[seed][f"grad/{name}/bias2_floor"] == pytest.approx(probed * B / N, rel=1e-9)


Z_LEVEL = 4.0  # two-sided normal level 6.3e-5
PROBED = tuple(name for name in ESTIMATORS_INFO if name != "exact")


def test_reinforce_probe_is_the_same_at_every_temperature(tmp_path):
    """REINFORCE does not depend on tau: one closed form serves the current and every ladder tau."""
    cfg = _config(tmp_path, relaxation="reinforce", probe_taus=(0.1, 10.0), probe_estimators=("reinforce", "soft"))
    pop = Population(cfg, [1])
    pop.train(3)
    row = next(iter(_probe_rows(pop).values()))
    for stat in ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor", "n"):
        assert row[f"grad/reinforce/{stat}"] == row[f"ladder/0.1/reinforce/{stat}"] == row[f"ladder/10/reinforce/{stat}"], stat
    assert row["ladder/0.1/soft/variance"] != row["ladder/10/soft/variance"]


def test_a_temperature_probed_twice_is_measured_once(tmp_path, monkeypatch):
    """The current tau on the ladder: one measurement serves both probe rows."""
    import study.evaluation as evaluation

    cfg = _config(tmp_path, schedule="constant", tau0=0.5, probe_taus=(0.5, 2.0), probe_estimators=("hard",))
    pop = Population(cfg, [1])
    calls = []
    inner = evaluation.sampled_moments
    monkeypatch.setattr(evaluation, "sampled_moments", lambda *a, **k: calls.append(len(a[4])) or inner(*a, **k))
    row = next(iter(_probe_rows(pop).values()))
    assert calls == [2]  # 0.5 and 2.0
    for stat in ("bias2", "variance", "n"):
        assert row[f"grad/hard/{stat}"] == row[f"ladder/0.5/hard/{stat}"]


@pytest.mark.parametrize("relaxation", [r for r in RELAXATIONS if r != "soft"])
def test_one_hot_samples_have_no_sample_bias_and_draw_nothing(tmp_path, relaxation):
    """Every relaxation but soft emits the one-hot of argmax(logits + G): vertex_gap and mean_bias
    are exactly 0, so the evaluation reports 0 without drawing (the evaluation generator is left
    as it was)."""
    from study.evaluation import sample_metrics

    pop = Population(_config(tmp_path, relaxation=relaxation), [1, 2])
    pop.train(2)
    before = pop.eval_rng.get_state()
    metrics = sample_metrics(pop, pop.tau())
    assert torch.equal(pop.eval_rng.get_state(), before)
    assert all(float(v.abs().max()) == 0.0 for v in metrics.values())


@pytest.mark.parametrize("relaxation", ["rebar", "relax"])
def test_adapted_control_variates_continue_bit_identically_from_a_checkpoint(tmp_path, relaxation):
    """REBAR / RELAX adapt eta, lambda (and RELAX's network) per replica with their own Adam: those
    are part of the population's state, so 3 steps, a state_dict round trip into a new population,
    and 3 more steps equal 6 uninterrupted steps exactly (replicas adapt apart: eta differs)."""
    cfg = _config(tmp_path, relaxation=relaxation, discriminator="mlp", disc_width=8, relax_hidden=4)
    whole = Population(cfg, [3, 4])
    whole.train(6)
    first = Population(cfg, [3, 4])
    first.train(3)
    second = Population(cfg, [3, 4])
    second.load_state_dict(first.state_dict())
    second.train(3)
    for a, b in zip((*whole.gen_params, *whole.disc_params), (*second.gen_params, *second.disc_params)):
        assert torch.equal(a, b)
    for a, b in zip(whole.control.state_dict()["tensors"], second.control.state_dict()["tensors"]):
        assert torch.equal(a, b)
    assert not torch.equal(whole.control.eta[0], whole.control.eta[1])
    assert torch.equal(whole.tau(), second.tau()) and not torch.equal(whole.tau(), torch.full_like(whole.tau(), cfg.tau0))
