"""A file shuffle whose pass index counts epochs of the run, not executions of one Dataset object.

Ray Data reseeds `FileShuffleConfig(seed, reseed_after_execution=True)` with its execution index, which starts at
0 for every new Dataset. A resumed run builds a new Dataset at epoch k, so without an offset it would replay
epoch 0's file order (and, with views made in Ray Data's tasks, epoch 0's augmentations): a resumed run and an
uninterrupted one would then not see the same stream, and a paired comparison across a restart would break.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.data import FileShuffleConfig


@dataclass
class EpochFileShuffle(FileShuffleConfig):
    """`FileShuffleConfig` seeded by (seed, first_epoch + execution index): pass i of a run that starts at epoch
    `first_epoch` shuffles its files as pass first_epoch + i of an uninterrupted run."""

    first_epoch: int = 0

    def get_seed(self, execution_idx: int = 0) -> int | None:
        return super().get_seed(execution_idx + self.first_epoch)
