"""kNN: accuracy on separable / random data, weighted voting vs a naive reference, several-k path, bad input."""

import pytest
import torch
import torch.nn.functional as F

from hexray.eval.knn import (
    knn_accuracies,
    knn_accuracy,
    knn_predict,
    knn_predict_multi,
    superclass_knn_accuracies,
)


def clusters(n_per_class: int, num_classes: int, dim: int, noise: float, seed: int, noise_seed: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen) * 5
    if noise_seed is not None:
        gen = torch.Generator().manual_seed(noise_seed)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + noise * torch.randn(y.numel(), dim, generator=gen)
    return x, y


def naive_knn(train_x, train_y, query_x, k, temperature, num_classes):
    """Per-query loop: sort all similarities, vote exp(s/T) for the k best."""
    train = F.normalize(train_x, dim=1)
    preds = []
    for q in F.normalize(query_x, dim=1):
        sims = train @ q
        order = sims.argsort(descending=True)[:k]
        votes = torch.zeros(num_classes, dtype=torch.float64)
        for j in order.tolist():
            votes[train_y[j]] += torch.exp(sims[j].double() / temperature)
        preds.append(int(votes.argmax()))
    return torch.tensor(preds)


def test_separable_clusters_are_classified_perfectly():
    x, y = clusters(60, 5, 16, noise=0.3, seed=0)
    qx, qy = clusters(20, 5, 16, noise=0.3, seed=0, noise_seed=1)  # same centres, fresh noise
    assert knn_accuracy(x, y, qx, qy, k=20, num_classes=5, chunk_size=7) == pytest.approx(1.0)


def test_random_labels_give_chance_accuracy():
    gen = torch.Generator().manual_seed(0)
    x, qx = torch.randn(2000, 32, generator=gen), torch.randn(1000, 32, generator=gen)
    y, qy = torch.randint(0, 10, (2000,), generator=gen), torch.randint(0, 10, (1000,), generator=gen)
    acc = knn_accuracy(x, y, qx, qy, k=20, num_classes=10)
    assert 0.05 < acc < 0.16


@pytest.mark.parametrize("k", [1, 5, 30])
def test_weighted_vote_matches_naive_reference(k):
    gen = torch.Generator().manual_seed(k)
    x, qx = torch.randn(80, 6, generator=gen), torch.randn(25, 6, generator=gen)
    y = torch.randint(0, 4, (80,), generator=gen)
    expected = naive_knn(x, y, qx, k, 0.5, 4)
    assert torch.equal(knn_predict(x, y, qx, k=k, temperature=0.5, num_classes=4, chunk_size=4), expected)


def test_temperature_weighting_changes_the_vote():
    # One very close neighbour of class 1 against two distant ones of class 0: a sharp T lets the close one win.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.3]])
    assert knn_predict(train, labels, query, k=3, temperature=0.05, num_classes=2).item() == 1
    assert knn_predict(train, labels, query, k=3, temperature=100.0, num_classes=2).item() == 0


def test_several_k_equal_single_k_and_reference():
    gen = torch.Generator().manual_seed(3)
    x, qx = torch.randn(300, 8, generator=gen), torch.randn(50, 8, generator=gen)
    y, qy = torch.randint(0, 3, (300,), generator=gen), torch.randint(0, 3, (50,), generator=gen)
    multi = knn_predict_multi(x, y, qx, ks=(20, 200), temperature=0.1, num_classes=3, chunk_size=16)
    for k in (20, 200):
        single = knn_predict(x, y, qx, k=k, temperature=0.1, num_classes=3)
        assert torch.equal(multi[k], single)
        assert torch.equal(multi[k], naive_knn(x, y, qx, k, 0.1, 3))
    accs = knn_accuracies(x, y, qx, qy, ks=(20, 200), temperature=0.1, num_classes=3)
    assert accs[20] == knn_accuracy(x, y, qx, qy, k=20, temperature=0.1, num_classes=3)


def test_k_larger_than_train_set_uses_all_samples():
    x, y = clusters(3, 2, 4, noise=0.1, seed=0)
    assert knn_predict(x, y, x, k=100, num_classes=2).shape == (6,)


def test_superclass_fine_then_map_and_direct():
    # 4 fine classes, superclasses {0,1}->0, {2,3}->1; fine classes inside a superclass overlap heavily, so the
    # fine accuracy is poor but both superclass accuracies are near perfect.
    gen = torch.Generator().manual_seed(0)
    super_centres = torch.randn(2, 16, generator=gen) * 5
    table = torch.tensor([0, 0, 1, 1])

    def sample(n):
        y = torch.randint(0, 4, (n,), generator=gen)
        return super_centres[table[y]] + torch.randn(n, 16, generator=gen), y

    x, y = sample(400)
    qx, qy = sample(200)
    res = superclass_knn_accuracies(x, y, qx, qy, table, ks=(10,), num_classes=4)
    assert res["fine_then_map"][10] > 0.97 and res["direct"][10] > 0.97
    assert res["fine"][10] < 0.8
    assert res["fine"][10] == knn_accuracy(x, y, qx, qy, k=10, num_classes=4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(train_features=torch.randn(10, 4), query_features=torch.randn(3, 5)), "query_features"),
        (dict(train_labels=torch.zeros(9, dtype=torch.long)), "train_labels"),
        (dict(k=0), "k"),
        (dict(temperature=0.0), "temperature"),
        (dict(train_labels=torch.full((10,), 7)), "train_labels"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(
        train_features=torch.randn(10, 4), train_labels=torch.zeros(10, dtype=torch.long),
        query_features=torch.randn(3, 4), k=5, num_classes=2,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        knn_predict(**args)


def test_query_label_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="query_labels"):
        knn_accuracy(torch.randn(10, 4), torch.zeros(10, dtype=torch.long), torch.randn(3, 4),
                     torch.zeros(4, dtype=torch.long), num_classes=2)


def test_superclass_map_length_is_checked():
    with pytest.raises(ValueError, match="class_to_superclass"):
        superclass_knn_accuracies(torch.randn(10, 4), torch.zeros(10, dtype=torch.long), torch.randn(3, 4),
                                  torch.zeros(3, dtype=torch.long), [0, 1, 1], num_classes=2)
