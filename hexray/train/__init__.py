"""Ray Train orchestration: the per-worker loop, TorchTrainer assembly, checkpoints, online monitors."""
