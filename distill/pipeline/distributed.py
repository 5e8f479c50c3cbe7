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
        import torch
        from accelerate import PartialState

        # Joins the process group: nccl on GPUs; on CPU accelerate only sets up (gloo)
        # data parallelism when told it is a CPU run.
        state = PartialState(cpu=not torch.cuda.is_available())
        if not torch.cuda.is_available():
            _allow_indexed_cpu_storages()
        return Processes(world_size=state.num_processes, rank=state.process_index)
    return Processes(world_size=1, rank=0)


def _allow_indexed_cpu_storages() -> None:
    """Let torch.load restore tensors tagged "cpu:0".

    A multi-process CPU run puts the Trainer's state on device "cpu:0"; its checkpoints
    then hold storages tagged "cpu:0", which torch cannot map back, so resuming fails
    ("don't know how to restore data location"). They are ordinary CPU tensors.
    """
    import torch

    def restore(storage: object, location: str) -> object | None:
        return storage if location.startswith("cpu:") else None

    torch.serialization.register_package(9, lambda obj: None, restore)


def use_cpu() -> bool:
    """Whether the Trainer must be told this is a CPU run (needed for CPU data parallelism)."""
    import torch

    return current().distributed and not torch.cuda.is_available()


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
