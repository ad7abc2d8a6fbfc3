"""The head of the small specs that the bad-input and search tests build on: a study named "bad"
of 2 seeds over a uniform target with K = 5 (the [fixed] table stays open for more keys)."""

SPEC_HEAD = """
name = "bad"
seeds = 2
[fixed]
categories = 5
target = "uniform"
"""
