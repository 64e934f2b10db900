"""Seeds derived from several integers, so every random draw is a function of (seed, rank, step...).

The one seeding convention of training: ``mix_seed(run seed, indices..., tag)``, where the
purpose tag keeps the streams of different uses apart (the same (seed, rank, step) never seeds
two different draws).
"""

from __future__ import annotations

from assd.rng import mix_seed

# Purpose tags, the last argument of mix_seed:
TAG_ORDERS = 1  # rates and orders of a training micro-batch: (seed, rank, micro-batch, tag)
TAG_VALIDATION = 2  # the order of validation chunk j: (seed, j, tag)
TAG_DATA_ORDER = 3  # the chunk permutation of an epoch: (seed, rank, epoch, tag)
TAG_SAMPLES = 4  # the infills logged at a step: (seed, step, tag)

__all__ = ["mix_seed", "TAG_ORDERS", "TAG_VALIDATION", "TAG_DATA_ORDER", "TAG_SAMPLES"]
