"""Shared fixtures. One local Ray instance per test session (Ray is slow to start and 2 cores are scarce)."""

from __future__ import annotations

import os

import pytest

# Keep Ray quiet and small on CI machines.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with more logical than physical CPUs: Ray Data's listing task needs one whole free CPU."""
    import ray

    from hexray.train.launch import start_local_ray

    if not ray.is_initialized():
        start_local_ray(4, log_to_driver=False)
    yield ray
    ray.shutdown()
