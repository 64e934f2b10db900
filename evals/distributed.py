"""Several processes (``accelerate launch``): who am I, my share of the items, wait for all.

    accelerate launch --multi_gpu --num_processes 4 evals/run_all.py ...  # one process per GPU
    accelerate launch --multi_gpu --num_processes 2 evals/run_all.py ...  # no GPU: CPU, gloo
    torchrun --nproc_per_node 2 evals/run_all.py ...                      # the same

(``accelerate launch --cpu --num_processes 2`` starts one process unless MPI is configured:
accelerate's multi-CPU launch goes through mpirun.)

Every process runs every eval on its share of the items (``store.shard``: disjoint, together
complete) and appends to its own shard file; after each eval all processes wait, and the main
process merges the shards and writes the one report. A plain ``python evals/run_all.py`` is one
process with the whole share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    state: object | None = None  # accelerate.PartialState when launched with several processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """This process's device under accelerate (its own GPU, or the CPU); None: choose."""
        return None if self.state is None else self.state.device

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def init(timeout_hours: float = 24.0) -> Dist:
    """Dist() for one process; under ``accelerate launch`` the process group (a long timeout:
    a process that finishes its share early waits for the slowest)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
        "1",
        "true",
    )
    state = PartialState(cpu=cpu, timeout=timedelta(hours=timeout_hours))
    return Dist(state.process_index, state.num_processes, state)
