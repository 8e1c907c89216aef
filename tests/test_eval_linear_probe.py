"""Linear probe: learns a linearly separable problem, class-balanced reproducible label fractions, bad input."""

import pytest
import torch

from hexray.eval.linear_probe import balanced_subset, train_linear_probe


def linear_problem(n: int, dim: int, num_classes: int, seed: int):
    """Labels from a fixed random linear map (argmax), so a linear classifier can reach ~100 %."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, dim, generator=gen) * 3 + 10  # offset/scale: standardisation must cope
    return x, (x - 10).matmul(w).argmax(dim=1)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_probe_learns_linearly_separable_problem(schedule):
    x, y = linear_problem(3000, 16, 4, seed=0)
    tx, ty = linear_problem(1000, 16, 4, seed=1)
    result = train_linear_probe(x, y, tx, ty, epochs=30, lr=0.3, schedule=schedule, batch_size=256, seed=0)
    assert result.accuracy > 0.95
    assert result.train_accuracy > 0.95
    assert result.loss_history[-1] < result.loss_history[0]
    assert result.predictions.shape == (1000,)


def test_probe_on_random_labels_is_near_chance():
    gen = torch.Generator().manual_seed(0)
    x, tx = torch.randn(2000, 16, generator=gen), torch.randn(1000, 16, generator=gen)
    y, ty = torch.randint(0, 5, (2000,), generator=gen), torch.randint(0, 5, (1000,), generator=gen)
    assert train_linear_probe(x, y, tx, ty, epochs=5, batch_size=512).accuracy < 0.3


def test_probe_is_deterministic_given_seed():
    x, y = linear_problem(500, 8, 3, seed=0)
    a = train_linear_probe(x, y, x, y, epochs=3, label_fraction=0.2, seed=7)
    b = train_linear_probe(x, y, x, y, epochs=3, label_fraction=0.2, seed=7)
    assert a.loss_history == b.loss_history and torch.equal(a.predictions, b.predictions)
    assert a.num_train == 3 * round(0.2 * 500 / 3)


def test_label_fraction_subset_is_class_balanced_and_reproducible():
    y = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    idx = balanced_subset(y, 0.1, seed=3)
    assert torch.equal(torch.bincount(y[idx], minlength=10), torch.full((10,), 10))
    assert torch.equal(idx, balanced_subset(y, 0.1, seed=3))
    assert not torch.equal(idx, balanced_subset(y, 0.1, seed=4))
    assert idx.unique().numel() == idx.numel()
    # 1 % of 1000 over 10 classes: one sample per class.
    assert torch.equal(torch.bincount(y[balanced_subset(y, 0.01, seed=0)], minlength=10), torch.ones(10).long())
    assert balanced_subset(y, 1.0, seed=0).numel() == 1000


def test_balanced_subset_caps_small_classes():
    y = torch.tensor([0] * 90 + [1] * 10)
    counts = torch.bincount(y[balanced_subset(y, 0.5, seed=0)])
    assert counts.tolist() == [25, 10]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(label_fraction=0.0), "label_fraction"),
        (dict(label_fraction=1.5), "label_fraction"),
        (dict(schedule="linear"), "schedule"),
        (dict(epochs=0), "epochs"),
        (dict(train_y=torch.zeros(9, dtype=torch.long)), "train_y"),
        (dict(test_x=torch.randn(5, 3)), "test_x"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(
        train_x=torch.randn(10, 4), train_y=torch.zeros(10, dtype=torch.long),
        test_x=torch.randn(5, 4), test_y=torch.zeros(5, dtype=torch.long), epochs=1,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        train_linear_probe(**args)
