"""Per-replica random numbers: each replica's own generator fills blocks of Exp(1) numbers, and
every draw of a training step is carved from them in a declared layout.

Replica r of a population must follow the same trajectory as a population of that seed alone, so
every random number of replica r comes from its own torch.Generator, in an order that the
replica's config sets and R never does. One `uniform_` call per replica fills a block of T steps
at once ([R, T, M]: M numbers per replica per step), which keeps R generators cheap.

A step's row [R, M] is cut into the segments of its `StepLayout`, in order; each cut is checked
against the layout (name and shape), and `StepNumbers.finish` checks that the step used its row
exactly. What the numbers become is up to the caller: uniforms exp(-E) for real data, Gumbels
-log E for samples (study.estimators), Gaussians for generator noise (`normal_from_exponentials`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BLOCK_NUMBERS", "RandomBlocks", "StepLayout", "StepNumbers", "normal_from_exponentials"]

BLOCK_NUMBERS = 1 << 16  # Exp(1) numbers per replica per refill (256 KiB in float32)
MAX_BLOCK_STEPS = 256


def normal_from_exponentials(e1: Tensor, e2: Tensor) -> Tensor:
    """Box-Muller with U = exp(-E): sqrt(-2 log U1) = sqrt(2 E1)."""
    return torch.sqrt(2.0 * e1) * torch.cos(2.0 * math.pi * torch.exp(-e2))  # ~N(0, 1)


class StepLayout:
    """The named segments of one step's numbers, per replica, in the order they are carved."""

    def __init__(self, segments: list[tuple[str, tuple[int, ...]]]):
        self.segments = tuple((name, tuple(shape)) for name, shape in segments)
        self.numbers = sum(math.prod(shape) for _, shape in self.segments)  # M

    def __repr__(self) -> str:
        return f"StepLayout({', '.join(f'{name}{list(shape)}' for name, shape in self.segments)})"


class StepNumbers:
    """One step's row of Exp(1) numbers [R, M], cut into its layout's segments in order."""

    def __init__(self, row: Tensor, layout: StepLayout):
        self.row, self.layout = row, layout
        self.offset, self.segment = 0, 0

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """The next segment as [R, *shape]; it must be the layout's next one, `name` of `shape`."""
        expected = self.layout.segments[self.segment] if self.segment < len(self.layout.segments) else None
        if expected is None or expected[1] != tuple(shape) or expected[0].rsplit("/", 1)[-1] != name:
            raise AssertionError(f"step draws {name}{list(shape)} where {self.layout} has {expected} next")
        n = math.prod(shape)
        out = self.row[:, self.offset : self.offset + n].reshape(self.row.shape[0], *shape)
        self.offset += n
        self.segment += 1
        return out

    def exponentials(self, name: str, shape: tuple[int, ...], group_dim: int = 0) -> Tensor:
        """The estimators' noise source (study.estimators.NoiseSource): Exp(1) numbers of `shape`,
        whose dim `group_dim` is the replica dim. The layout's segment holds each replica's numbers
        in the order of the other dims; the replica dim is moved into place as a view."""
        if shape[group_dim] != self.row.shape[0]:
            raise AssertionError(f"{name} drawn for {shape[group_dim]} replicas, the population has {self.row.shape[0]}")
        per_replica = tuple(shape[:group_dim]) + tuple(shape[group_dim + 1 :])
        numbers = self.take(name, per_replica)  # [R, *per_replica]
        return numbers if group_dim == 0 else numbers.movedim(0, group_dim)

    def finish(self) -> None:
        if self.segment != len(self.layout.segments) or self.offset != self.layout.numbers:
            raise AssertionError(f"step used {self.offset} of its {self.layout.numbers} numbers ({self.layout})")


class RandomBlocks:
    """Blocks of Exp(1) numbers [R, T, M] for R replicas, each row drawn from its replica's own RNG."""

    def __init__(self, rngs: list[torch.Generator], layout: StepLayout, dtype: torch.dtype, device: torch.device):
        self.rngs, self.layout = rngs, layout
        self.block_steps = max(1, min(MAX_BLOCK_STEPS, BLOCK_NUMBERS // layout.numbers))  # T
        self.buffer = torch.empty(len(rngs), self.block_steps, layout.numbers, dtype=dtype, device=device)  # [R, T, M]
        self.cursor = self.block_steps  # empty: refill on first use
        self.block_states: list[Tensor] = []  # RNG states before the current block's draw

    def refill(self) -> None:
        # The states before the draw are all a checkpoint needs to redraw this block.
        self.block_states = [rng.get_state() for rng in self.rngs]
        for r, rng in enumerate(self.rngs):
            self.buffer[r].uniform_(generator=rng)  # ~U[0, 1), [T, M]
        # -log U ~ Exp(1): uniform_ and log beat exponential_ on CPU (benchmarks/README.md).
        self.buffer.clamp_min_(torch.finfo(self.buffer.dtype).tiny).log_().neg_()  # [R, T, M]
        self.cursor = 0

    def next_step(self) -> StepNumbers:
        if self.cursor == self.block_steps:
            self.refill()
        row = self.buffer[:, self.cursor]  # [R, M]
        self.cursor += 1
        return StepNumbers(row, self.layout)

    def restore(self, block_states: list[Tensor], cursor: int) -> None:
        """Redraw the block in use at a checkpoint (when there was one) and stand where it stood."""
        if block_states:
            for rng, state in zip(self.rngs, block_states):
                rng.set_state(state)
            self.refill()
        self.cursor = int(cursor)
