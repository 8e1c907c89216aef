"""The train loop's epoch stream: the next epoch's first batch loads in the background, nothing is lost or reordered."""

from __future__ import annotations

import threading

import pytest
import torch

from hexray.train.loop import _EpochStream


class FakeShard:
    """Stands in for a Ray Data shard: each call to iter_torch_batches is a new epoch of numbered batches."""

    def __init__(self, batches: int = 4, fail_on_epoch: int | None = None) -> None:
        self.epochs, self.batches, self.fail_on_epoch = 0, batches, fail_on_epoch
        self.opened_on: list[str] = []
        self.kwargs: dict = {}

    def iter_torch_batches(self, **kwargs):
        self.kwargs = kwargs
        self.opened_on.append(threading.current_thread().name)
        epoch, self.epochs = self.epochs, self.epochs + 1
        if epoch == self.fail_on_epoch:
            raise RuntimeError(f"shard file missing in epoch {epoch}")
        return ({"id": torch.tensor([epoch * 100 + i])} for i in range(self.batches))


def ids(batches) -> list[int]:
    return [int(b["id"]) for b in batches]


def test_first_epoch_opens_inline_and_later_epochs_are_prefetched_in_order():
    shard = FakeShard()
    stream = _EpochStream(shard, batch_size=8, device=torch.device("cpu"), shuffle_buffer=0)
    assert ids(stream.next_epoch(0)) == [0, 1, 2, 3]
    stream.start_next(1)
    assert ids(stream.next_epoch(1)) == [100, 101, 102, 103]
    assert shard.opened_on[0] == threading.current_thread().name and shard.opened_on[1] == "hexray-next-epoch"
    assert shard.kwargs["batch_size"] == 8 and shard.kwargs["drop_last"] is True
    assert shard.kwargs["local_shuffle_buffer_size"] is None and shard.kwargs["device"] == torch.device("cpu")
    assert ids(stream.next_epoch(2)) == [200, 201, 202, 203], "without start_next the epoch opens inline"


def test_the_local_shuffle_is_seeded_by_run_seed_and_epoch():
    from hexray.train.loop import shuffle_seed

    seeds = []
    for seed in (0, 0, 1):
        shard = FakeShard()
        stream = _EpochStream(shard, batch_size=8, device=torch.device("cpu"), shuffle_buffer=64, seed=seed)
        for epoch in range(2):
            stream.next_epoch(epoch)
            seeds.append(shard.kwargs["local_shuffle_seed"])
            assert shard.kwargs["local_shuffle_seed"] == shuffle_seed(seed, epoch)
    assert seeds[:2] == seeds[2:4] and seeds[0] != seeds[1] and seeds[4] != seeds[0]


def test_an_empty_epoch_and_a_failing_epoch_reach_the_training_thread():
    stream = _EpochStream(FakeShard(batches=0), batch_size=8, device=torch.device("cpu"), shuffle_buffer=16)
    stream.start_next(0)
    assert ids(stream.next_epoch(0)) == []
    failing = _EpochStream(FakeShard(fail_on_epoch=0), batch_size=8, device=torch.device("cpu"), shuffle_buffer=0)
    failing.start_next(0)
    with pytest.raises(RuntimeError, match="shard file missing in epoch 0"):
        failing.next_epoch(0)
