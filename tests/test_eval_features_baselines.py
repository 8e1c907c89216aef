"""Feature extraction (eval mode, no grad, any dict iterable) and baselines scored the same way."""

import numpy as np
import pytest
import torch
from torch import nn

from hexray.eval.baselines import EvalSettings, evaluate_features, random_init_copy, raw_pixel_features
from hexray.eval.features import extract_features


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 4))

    def forward(self, x):
        return self.net(x)


def batches(n_batches: int, with_superclass: bool = True):
    gen = torch.Generator().manual_seed(0)
    for i in range(n_batches):
        batch = {"image": torch.randn(5, 3, 2, 2, generator=gen), "label": torch.arange(5) + i, "id": torch.arange(5)}
        if with_superclass:
            batch["superclass"] = np.arange(5) % 2  # numpy values (Ray Data numpy batches) are accepted
        yield batch


def test_extract_features_runs_in_eval_mode_without_grad_and_restores_mode():
    model = TinyNet().train()
    feats, labels, supers = extract_features(model, batches(3), device="cpu")
    assert feats.shape == (15, 4) and feats.dtype == torch.float32 and not feats.requires_grad
    assert torch.equal(labels[:5], torch.arange(5)) and torch.equal(supers[:5], torch.arange(5) % 2)
    assert model.training
    # Eval mode: deterministic (dropout off, BN running stats) and equal to a manual eval pass.
    again, _, _ = extract_features(model, batches(3), device="cpu")
    assert torch.equal(feats, again)
    model.eval()
    with torch.no_grad():
        expected = model(next(batches(1))["image"])
    assert torch.allclose(feats[:5], expected)


def test_extract_features_without_superclass_gives_minus_one_and_checks_keys():
    _, _, supers = extract_features(TinyNet(), batches(2, with_superclass=False))
    assert torch.equal(supers, torch.full((10,), -1))
    with pytest.raises(ValueError, match="pixels"):
        extract_features(TinyNet(), batches(1), key="pixels")
    with pytest.raises(ValueError, match="batches"):
        extract_features(TinyNet(), [])


def test_raw_pixel_features_flatten_and_centre_by_train_mean():
    train, test = torch.rand(20, 1, 4, 4) + 1, torch.rand(7, 1, 4, 4)
    ftrain, ftest = raw_pixel_features(train, test)
    assert ftrain.shape == (20, 16) and ftest.shape == (7, 16)
    assert torch.allclose(ftrain.mean(dim=0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(ftest, test.reshape(7, -1) - train.reshape(20, -1).mean(dim=0))
    with pytest.raises(ValueError, match="test_images"):
        raw_pixel_features(train, torch.rand(7, 1, 3, 3))


def test_random_init_copy_redraws_weights_keeps_original_and_rng():
    model = TinyNet()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
        model.net[2].running_mean.fill_(3.0)
    state = torch.get_rng_state()
    a, b = random_init_copy(model, seed=1), random_init_copy(model, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.all(model.net[1].weight == 0.5)  # original untouched
    assert not torch.allclose(a.net[1].weight, model.net[1].weight)
    assert torch.equal(a.net[1].weight, b.net[1].weight)  # seeded
    assert torch.all(a.net[2].running_mean == 0)
    assert not torch.equal(a.net[1].weight, random_init_copy(model, seed=2).net[1].weight)


def test_evaluate_features_reports_fine_and_superclass_metrics():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=gen) * 5
    table = [0, 0, 1, 1]
    y, ty = torch.arange(4).repeat(50), torch.arange(4).repeat(25)
    x = centres[y] + torch.randn(200, 8, generator=gen)
    tx = centres[ty] + torch.randn(100, 8, generator=gen)
    settings = EvalSettings(ks=(5, 20), probe_epochs=10, label_fractions=(1.0, 0.1))
    m = evaluate_features(x, y, tx, ty, num_classes=4, class_to_superclass=table, settings=settings)
    assert set(m) == {
        "knn/top1@5", "knn/top1@20", "knn/superclass@5", "knn/superclass@20", "knn/superclass_direct@5",
        "knn/superclass_direct@20", "probe/top1", "probe/superclass", "probe/top1@10pct", "probe/superclass@10pct",
    }
    assert m["knn/top1@20"] > 0.95 and m["probe/top1"] > 0.95
    assert m["knn/superclass@20"] >= m["knn/top1@20"]  # a correct fine prediction is a correct superclass
    fine_only = evaluate_features(x, y, tx, ty, num_classes=4, settings=EvalSettings(ks=(20,), probe=False))
    assert fine_only == {"knn/top1@20": m["knn/top1@20"]}
    no_knn = EvalSettings(knn=False, probe_epochs=10, label_fractions=(1.0, 0.1))
    probe_only = evaluate_features(x, y, tx, ty, num_classes=4, class_to_superclass=table, settings=no_knn)
    assert probe_only == {k: v for k, v in m.items() if k.startswith("probe/")}  # the same probes, no kNN
