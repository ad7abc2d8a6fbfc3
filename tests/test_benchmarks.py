"""The population benchmark's FLOP accounting, checked against the matmuls the population runs."""

import pytest
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.population import WIDTH, bench_config, flops_per_replica_step
from study.population import Population

BATCH = 64  # small enough to be quick; K = 100 >= B exercises the path without distinct rows


@pytest.mark.parametrize("K", [10, 100])
@pytest.mark.parametrize("distinct", [True, False])
def test_executed_flops_are_the_flops_of_the_population_matmuls(K, distinct):
    R = 3
    pop = Population(bench_config(K, batch=BATCH), seeds=list(range(R)), distinct_rows=distinct)
    pop.train(1)
    with FlopCounterMode(display=False) as counter:
        pop.train_step()
    flops = flops_per_replica_step(K, batch=BATCH, distinct_rows=distinct)
    assert flops["d_rows"] == (K + BATCH if distinct and K < BATCH else 2 * BATCH)
    # The input gradient of the width-1 output layer is an outer product, not a matmul:
    # 2 x WIDTH FLOPs per row of the D step and of the G step.
    not_matmul = (flops["d_rows"] + BATCH) * 2 * WIDTH
    assert counter.get_total_flops() / R + not_matmul == flops["executed"]
    assert flops["executed"] < flops["nominal"]
