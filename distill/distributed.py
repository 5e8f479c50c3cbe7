"""Process roles under `accelerate launch` / `torchrun`; a plain run is one main process.

distill never schedules processes itself: the launcher starts them, the Trainer runs
data-parallel training across them, and this module only answers "am I the main
process?", waits for the others, and splits the recipe's batch size over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from distill.errors import RecipeError


@dataclass(frozen=True)
class Processes:
    world_size: int
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@lru_cache(maxsize=1)
def current() -> Processes:
    """The launcher's view (WORLD_SIZE / RANK, set by torchrun and accelerate launch)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        from accelerate import PartialState

        state = PartialState()  # joins the process group (gloo on CPU, nccl on GPUs)
        return Processes(world_size=state.num_processes, rank=state.process_index)
    return Processes(world_size=1, rank=0)


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if current().distributed:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def split_batch(batch_size: int, world_size: int, table: str) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) whose product over all processes is ``batch_size``.

    The recipe's batch size is the effective one, whatever the process count, so that a
    learning rate tuned on one machine stays right on many.
    """
    if batch_size % world_size:
        raise RecipeError(
            [
                f"{table}.batch_size = {batch_size} cannot be split evenly over {world_size} processes"
            ]
        )
    per_process = batch_size // world_size
    return per_process, 1
