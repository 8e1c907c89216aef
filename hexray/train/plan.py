"""What the driver hands every training worker besides its dataset shard: one typed, picklable plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hexray.config import TrainConfig
from hexray.data.views import ViewMaker


@dataclass(frozen=True)
class WorkerPlan:
    """Built by `hexray.train.launch.build_trainer`, read by `hexray.train.loop.train_loop_per_worker`.

    root: the shard root (a local path or a URI, read where the worker runs). train_count: images per epoch
    (after data.limit_train). views: the view maker when workers augment (None: the batches already hold
    view1/view2). worker_hooks: hexray.train.worker_hooks objects. torch_threads: intra-op threads per worker
    (None: torch's default). final_eval: the workers compute the end-of-run table. progress_board: the console's
    actor (rank 0 posts to it) or None. corrupt_key: where Ray Data's tasks count undecodable images.
    """

    cfg: TrainConfig
    root: str
    num_classes: int
    class_to_superclass: list[int] | None
    train_count: int
    run_dir: str
    corrupt_key: str | None = None
    views: ViewMaker | None = None
    worker_hooks: list[Any] = field(default_factory=list)
    torch_threads: int | None = None
    final_eval: bool = False
    progress_board: Any = None
