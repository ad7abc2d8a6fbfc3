"""The discriminators of R replicas, forward and backward written by hand, as batched matmuls.

Shapes: R replicas (r of them in a chunk), M input rows per replica, K categories, H hidden width.

A discriminator is logistic regression (weights [R, K, 1], bias [R, 1, 1]) or an MLP
K -> H^depth -> 1 with LeakyReLU(0.2); its parameters are a list [w1, b1, w2, b2, ...] of stacked
tensors (w [R, n, m], b [R, 1, m]). Training asks for exactly the gradients it needs, with the
loss's gradient in closed form and no autograd graph:
- the D step: the loss and the gradients w.r.t. the parameters (`d_step`), no input gradient;
- a G step: softplus(-D(y)) per sample and the gradient of its batch mean w.r.t. the samples y
  (`fake_loss`), no parameter gradient; at the K unit vectors when every sample is a one-hot
  (`vertex_losses` + `gather_vertices`).
Probes that differentiate f(y) = softplus(-D(y)) with autograd go through `DiscriminatorFn`, one
autograd node over the same forward and backward.

Large populations run forward and backward in chunks of replicas (`replica_chunks`), so that a
chunk's activations are still in cache when its backward reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CHUNK_BYTES",
    "DiscriminatorFn",
    "backward",
    "d_loss",
    "d_pass",
    "d_step",
    "disc_logits",
    "fake_loss",
    "forward",
    "g_pass",
    "gather_vertices",
    "losses_at_samples",
    "replica_chunks",
    "twice_differentiable_logits",
    "vertex_losses",
]

CHUNK_BYTES = 2 << 20  # widest activation of one chunk of replicas (benchmarks/README.md: chunk sizes)
# Input gradients of a first layer at most this wide are computed as (w g^T)^T: BLAS runs a
# gemm with a handful of output columns far below its rate (benchmarks/README.md).
TRANSPOSED_INPUT_GRAD_MAX_WIDTH = 16
SLOPE = 0.2  # LeakyReLU's negative slope


def forward(x: Tensor, params: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Logits [r, M] of inputs x [r, M, K], and the activations [x, h_1, ..., h_L] that `backward`
    reads. `params` (sliced to r replicas) are used as given: pass them detached."""
    hs = [x]
    h = x
    for i in range(0, len(params) - 2, 2):
        h = torch.baddbmm(params[i + 1], h, params[i])  # [r, M, width]
        F.leaky_relu_(h, SLOPE)  # in place: the backward reads the sign from the output
        hs.append(h)
    w, b = params[-2], params[-1]  # [r, H, 1], [r, 1, 1]
    # The width-1 output layer as w^T h^T: a gemm with one output column runs far below BLAS's rate.
    out = torch.bmm(w.transpose(1, 2), h.transpose(1, 2)).squeeze(1).add_(b.view(-1, 1))  # [r, M]
    return out, hs


def backward(
    g_out: Tensor, hs: list[Tensor], params: list[Tensor], *, weights: bool, inputs: bool,
) -> tuple[list[Tensor | None], Tensor | None]:
    """Gradients of sum(g_out * logits), g_out [r, M]: w.r.t. the parameters (when `weights`, else
    Nones) and w.r.t. the input x [r, M, K] (when `inputs`, else None). Only what is asked for is
    computed: the D step needs no input gradient, a G step no parameter gradients."""
    grads: list[Tensor | None] = [None] * len(params)
    if weights:
        grads[-2] = torch.bmm(g_out.unsqueeze(1), hs[-1]).transpose(1, 2)  # [r, H, 1]
        grads[-1] = g_out.sum(dim=1).view(-1, 1, 1)  # [r, 1, 1]
    if not inputs and len(params) == 2:
        return grads, None
    grad_h = g_out.unsqueeze(-1) * params[-2].transpose(1, 2)  # d/dh_L, [r, M, H]
    for layer in reversed(range(len(params) // 2 - 1)):
        torch.ops.aten.leaky_relu_backward.grad_input(grad_h, hs[layer + 1], SLOPE, True, grad_input=grad_h)  # in place
        if weights:
            grads[2 * layer] = torch.bmm(hs[layer].transpose(1, 2), grad_h)  # [r, n, m]
            grads[2 * layer + 1] = grad_h.sum(dim=1, keepdim=True)  # [r, 1, m]
        if layer == 0 and not inputs:
            return grads, None
        w = params[2 * layer]  # [r, n, m]
        if w.shape[1] <= TRANSPOSED_INPUT_GRAD_MAX_WIDTH:
            grad_h = torch.bmm(w, grad_h.transpose(1, 2)).transpose(1, 2)  # [r, M, n]
        else:
            grad_h = torch.bmm(grad_h, w.transpose(1, 2))  # [r, M, n]
    return grads, grad_h


class DiscriminatorFn(torch.autograd.Function):
    """The discriminator as one autograd node, for callers that differentiate through it:
    apply(x [r, M, K], *params) -> logits [r, M]."""

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        out, hs = forward(x, list(params))
        ctx.save_for_backward(*hs, *params)
        ctx.layers = len(hs)
        return out

    @staticmethod
    def backward(ctx, g_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        hs, params = list(saved[: ctx.layers]), list(saved[ctx.layers :])
        needs = ctx.needs_input_grad
        grads, grad_x = backward(g_out, hs, params, weights=any(needs[1:]), inputs=needs[0])
        return (grad_x, *grads)


def disc_logits(y: Tensor, params: list[Tensor], replica_dim: int = 0) -> Tensor:
    """Logits for inputs y [..., R, ..., K] -> [..., R, ...] (the K dim removed), through
    DiscriminatorFn: gradients reach y, never the (detached) parameters."""
    R, K = params[0].shape[0], y.shape[-1]
    replica_dim = replica_dim % y.ndim
    x = y.movedim(replica_dim, 0)  # [R, ..., K]
    rest = x.shape[1:-1]
    out = DiscriminatorFn.apply(x.reshape(R, -1, K), *(p.detach() for p in params))  # [R, M]
    return out.reshape(R, *rest).movedim(0, replica_dim)


def replica_chunks(params: list[Tensor], rows: int) -> list[slice]:
    """Replica slices whose widest activation ([r, rows, width]) stays within CHUNK_BYTES, all of
    about the same size (no small tail)."""
    R = params[0].shape[0]
    width = max(p.shape[-1] for p in params)
    most = max(1, CHUNK_BYTES // (rows * width * params[0].dtype.itemsize))
    size = -(-R // -(-R // most))  # as many chunks as needed, of equal size
    return [slice(start, min(start + size, R)) for start in range(0, R, size)]


# ---------------------------------------------------------------------- the D step


def d_loss(out: Tensor, weights: Tensor, n_real: int) -> tuple[Tensor, Tensor]:
    """Non-saturating D loss per replica [r] from logits [r, n + m] (n real rows, then m fake
    rows) and each row's weight [r, n + m], and its gradient w.r.t. the logits [r, n + m].

    With s = -1 for real rows and +1 for fake ones, loss = sum w softplus(s out), and
    dloss/dout = s w sigmoid(s out)."""
    signed = torch.cat([-out[:, :n_real], out[:, n_real:]], dim=1)  # s * out, [r, n + m]
    loss = (F.softplus(signed) * weights).sum(dim=1)  # [r]
    g_out = torch.sigmoid(signed).mul_(weights)  # [r, n + m]
    g_out[:, :n_real].neg_()
    return loss, g_out


def d_pass(x: Tensor, params: list[Tensor], weights: Tensor, n_real: int) -> tuple[Tensor, list[Tensor]]:
    """The D step's loss [r] on x [r, n + m, K] and its gradients w.r.t. the parameters."""
    out, hs = forward(x, params)  # [r, n + m]
    loss, g_out = d_loss(out, weights, n_real)  # [r], [r, n + m]
    grads, _ = backward(g_out, hs, params, weights=True, inputs=False)
    return loss, grads


def d_step(x: Tensor, params: list[Tensor], weights: Tensor, n_real: int) -> tuple[Tensor, list[Tensor]]:
    """D loss [R] on x [R, n + m, K] (n real rows, then m fake rows, each with its weight [R, n + m])
    and its gradients w.r.t. the (detached) parameters, chunk by chunk over replicas."""
    chunks = replica_chunks(params, x.shape[1])
    if len(chunks) == 1:  # slicing and copying cost more than cache locality saves here
        return d_pass(x, params, weights, n_real)
    grads = [torch.empty_like(p) for p in params]
    losses = []
    for sl in chunks:
        loss, chunk_grads = d_pass(x[sl], [p[sl] for p in params], weights[sl], n_real)  # [r]
        for full, grad in zip(grads, chunk_grads):
            full[sl] = grad
        losses.append(loss)
    return torch.cat(losses), grads


# ---------------------------------------------------------------------- the G step's pass through D


def g_pass(y: Tensor, params: list[Tensor], samples: int, *, inputs: bool) -> tuple[Tensor, Tensor | None]:
    """softplus(-D(y)) per row [r, M] and, when `inputs`, the gradient w.r.t. y [r, M, K] of the
    rows' sum divided by `samples` (the mean over a batch of that many samples)."""
    out, hs = forward(y, params)  # [r, M]
    per_sample = F.softplus(-out)
    if not inputs:
        return per_sample, None
    g_out = torch.sigmoid(-out).mul_(-1.0 / samples)  # d (sum softplus(-out) / samples) / dout, [r, M]
    return per_sample, backward(g_out, hs, params, weights=False, inputs=True)[1]


def fake_loss(y: Tensor, params: list[Tensor], samples: int, *, inputs: bool) -> tuple[Tensor, Tensor | None]:
    """g_pass over every replica of y [R, M, K], chunk by chunk: softplus(-D(y)) [R, M] and, when
    `inputs`, its gradient w.r.t. y [R, M, K] (divided by `samples`)."""
    chunks = replica_chunks(params, y.shape[1])
    if len(chunks) == 1:
        return g_pass(y, params, samples, inputs=inputs)
    per_sample = torch.empty(y.shape[:2], dtype=y.dtype, device=y.device)  # [R, M]
    grad_y = torch.empty_like(y) if inputs else None  # [R, M, K]
    for sl in chunks:
        per_sample[sl], grad = g_pass(y[sl], [p[sl] for p in params], samples, inputs=inputs)
        if grad is not None:
            grad_y[sl] = grad
    return per_sample, grad_y


def vertex_losses(params: list[Tensor], *, inputs: bool) -> tuple[Tensor, Tensor | None]:
    """softplus(-D(e_k)) at the K unit vectors [R, K] and, when `inputs`, its gradient w.r.t. the
    input there [R, K, K] (row k: at e_k)."""
    R, K = params[0].shape[0], params[0].shape[1]
    units = torch.eye(K, dtype=params[0].dtype, device=params[0].device).expand(R, K, K)  # [R, K, K]
    return g_pass(units, params, 1, inputs=inputs)


def gather_vertices(values: Tensor, grads: Tensor | None, index: Tensor, samples: int) -> tuple[Tensor, Tensor | None]:
    """`vertex_losses` gathered to one-hot samples with categories index [R, M]: the losses [R, M]
    and, when `grads` is given, their gradients [R, M, K] divided by `samples`."""
    per_sample = values.gather(1, index)  # [R, M]
    if grads is None:
        return per_sample, None
    K = grads.shape[-1]
    return per_sample, grads.gather(1, index.unsqueeze(-1).expand(-1, -1, K)) / samples  # [R, M, K]


def twice_differentiable_logits(x: Tensor, params: list[Tensor]) -> Tensor:
    """The same logits as `forward` for x [R, M, K] -> [R, M], in plain autograd ops, so that
    gradients w.r.t. x can themselves be differentiated (REBAR's adaptation of its temperature
    needs f's curvature). Parameters are detached."""
    h = x
    params = [p.detach() for p in params]
    for i in range(0, len(params) - 2, 2):
        h = F.leaky_relu(torch.baddbmm(params[i + 1], h, params[i]), SLOPE)  # [R, M, width]
    return torch.baddbmm(params[-1], h, params[-2]).squeeze(-1)  # [R, M]


def losses_at_samples(
    y: Tensor, index: Tensor | None, params: list[Tensor], *, points: int, samples: int, inputs: bool,
    vertices: tuple[Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """softplus(-D(y)) [*points, G, ...] and, when `inputs`, its gradient w.r.t. y divided by
    `samples` [*points, G, ..., K], at samples y [*points, G, ..., K] whose G groups are replica-major
    (G = R n). With `vertices` = `vertex_losses(params)` the samples are one-hots of categories
    `index` [*points, G, ...] and the values are gathered; otherwise D runs on every sample."""
    R = params[0].shape[0]
    lead = tuple(range(points))

    def groups_first(t: Tensor) -> Tensor:
        return t.movedim(lead, tuple(range(1, points + 1))) if points else t

    def points_first(t: Tensor) -> Tensor:
        return t.movedim(tuple(range(1, points + 1)), lead) if points else t

    ys = groups_first(y)  # [G, *points, ..., K]
    if vertices is not None:
        values, grads = vertices
        per_sample, grad = gather_vertices(values, grads if inputs else None, groups_first(index).reshape(R, -1), samples)
    else:
        per_sample, grad = fake_loss(ys.detach().reshape(R, -1, ys.shape[-1]), params, samples, inputs=inputs)
    per_sample = points_first(per_sample.reshape(ys.shape[:-1]))
    return per_sample, None if grad is None else points_first(grad.reshape(ys.shape))
