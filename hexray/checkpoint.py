"""Checkpoint files of a run: `checkpoint_epochNNNN/state.pt` under the run directory (Ray Train writes them).

Shared by the layers that write checkpoints (train) and those that read them (eval, export, report), so neither
imports the other; torch is imported only where a state is written or a method rebuilt (`hexray report` lists
checkpoints without it).

state.pt = {"method": state_dict, "probe": state_dict | None, "optimizer", "scheduler", "epoch" (completed
epochs), "step" (optimizer steps done), "config": plain dict, "nan_skips": int, "rng": CPU RNG state}.
The method's state dict holds its target networks and queues (buffers), so MoCo/BYOL resume exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hexray import storage
from hexray.errors import DataError

STATE_FILE = "state.pt"
_EPOCH_RE = re.compile(r"checkpoint_epoch(\d+)$")


def checkpoint_dir_name(epoch: int) -> str:
    """Directory name Ray Train gives the checkpoint saved after `epoch` completed epochs."""
    return f"checkpoint_epoch{epoch:04d}"


def save_state(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `directory/state.pt` (atomically: a crash never leaves a half-written file)."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(directory / STATE_FILE)
    return directory / STATE_FILE


def load_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """The state dict saved in one checkpoint directory (local or on object storage), tensors on CPU."""
    path = storage.join(storage.normalize(str(ckpt_dir)), STATE_FILE)
    if not storage.is_file(path):
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint directory {storage.display(str(ckpt_dir))}")
    state = storage.torch_load(path, map_location="cpu", weights_only=False)
    missing = {"method", "epoch", "step", "config"} - set(state)
    if missing:
        raise DataError(f"checkpoint {path} lacks {sorted(missing)}")
    return state


def find_checkpoints(run_dir: str | Path) -> list[str]:
    """Checkpoint directories of a run (local or a URI) that hold a state file, oldest epoch first."""
    run_dir = storage.normalize(str(run_dir))
    if not storage.is_dir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found = []
    for name, is_directory in storage.list_dir(run_dir):
        match = _EPOCH_RE.match(name)
        if match and is_directory and storage.is_file(storage.join(run_dir, name, STATE_FILE)):
            found.append((int(match.group(1)), storage.join(run_dir, name)))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(run_dir_or_ckpt: str | Path) -> str:
    """A checkpoint directory itself, or the latest checkpoint of a run directory."""
    path = storage.normalize(str(run_dir_or_ckpt))
    if storage.is_file(storage.join(path, STATE_FILE)):
        return path
    checkpoints = find_checkpoints(path)
    if not checkpoints:
        raise FileNotFoundError(f"{path} holds no checkpoint (no checkpoint_epoch*/{STATE_FILE})")
    return checkpoints[-1]


def checkpoint_epoch(ckpt_dir: str) -> int:
    """Completed epochs of a checkpoint, from its directory name."""
    match = _EPOCH_RE.match(storage.basename(ckpt_dir))
    if not match:
        raise DataError(f"{ckpt_dir} is not a checkpoint_epochNNNN directory")
    return int(match.group(1))


def restore_method(run_dir_or_ckpt: str) -> tuple[Any, Any, int]:
    """(SSLMethod on CPU in eval mode, its TrainConfig, completed epochs) from a run dir or checkpoint dir."""
    from hexray.config import config_from_dict
    from hexray.methods.registry import build_method

    state = load_state(resolve_checkpoint(run_dir_or_ckpt))
    cfg = config_from_dict(state["config"])
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    method.load_state_dict(state["method"])
    method.eval()
    return method, cfg, int(state["epoch"])
