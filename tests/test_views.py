"""Views made on the training worker (data.augment_in: trainer): seeded, equal to the pipeline's, on a fixed canvas."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hexray.data.decode import fit_canvas
from hexray.data.manifest import Manifest
from hexray.data.pipeline import decode_canvas, decoded_batch, two_view_batch
from hexray.data.views import ViewMaker

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _batch(n: int = 6, size: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_view_maker_is_seeded_by_seed_epoch_and_ids():
    maker, x, ids = ViewMaker("simclr", 8, 3, MEAN, STD), _batch(), torch.arange(6)
    a1, a2 = maker(x, ids, epoch=0)
    b1, b2 = maker(x, ids.numpy(), epoch=0)
    assert a1.shape == a2.shape == (6, 3, 8, 8) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2)
    assert not torch.allclose(maker(x, ids, epoch=1)[0], a1), "a new epoch draws new augmentations"
    assert not torch.allclose(maker(x, ids + 100, epoch=0)[0], a1), "other samples, other draws"
    assert not torch.allclose(ViewMaker("simclr", 8, 4, MEAN, STD)(x, ids, epoch=0)[0], a1)


def test_view_maker_refuses_normalised_input_and_unknown_recipes():
    with pytest.raises(ValueError, match="uint8"):
        ViewMaker("simclr", 8, 0, MEAN, STD)(_batch().float(), torch.arange(6), epoch=0)
    with pytest.raises(ValueError, match="recipe must be one of"):
        ViewMaker("nope", 8, 0, MEAN, STD)


def test_crop_scale_replaces_the_recipes_crop_range_in_both_places_views_are_made():
    x, ids = _batch(size=24), torch.arange(6)
    plain = ViewMaker("simclr", 8, 3, MEAN, STD)(x, ids, epoch=0)
    same = ViewMaker("simclr", 8, 3, MEAN, STD, crop_scale=(0.08, 1.0))(x, ids, epoch=0)  # simclr's own range
    assert all(torch.equal(a, b) for a, b in zip(plain, same, strict=True))
    whole = ViewMaker("simclr", 8, 3, MEAN, STD, crop_scale=(0.2, 1.0))(x, ids, epoch=0)
    assert not torch.allclose(whole[0], plain[0])
    rows = _png_rows(x)
    pipeline = two_view_batch(rows, key="k", channels=3, recipe="simclr", image_size=8, seed=3, mean=list(MEAN),
                              std=list(STD), crop_scale=(0.2, 1.0))
    trainer = ViewMaker("simclr", 8, 3, MEAN, STD, crop_scale=(0.2, 1.0))(x, rows["id"], epoch=0)
    np.testing.assert_array_equal(trainer[0].numpy(), pipeline["view1"])


def _png_rows(images: torch.Tensor) -> dict[str, np.ndarray]:
    encoded = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    n = len(encoded)
    return {"image": np.array(encoded, dtype=object), "label": np.arange(n), "superclass": np.arange(n) // 2,
            "id": np.arange(100, 100 + n)}


def test_trainer_views_equal_the_pipeline_views_of_the_same_batch():
    """Decode-only + ViewMaker on the worker gives exactly what decode + augment in Ray Data gives."""
    x = _batch()
    rows = _png_rows(x)
    pipeline = two_view_batch(rows, key="k", channels=3, recipe="byol", image_size=8, seed=5, mean=list(MEAN),
                              std=list(STD))
    decoded = decoded_batch(rows, key="k", channels=3, canvas=12)
    assert decoded["image"].dtype == np.uint8 and np.array_equal(decoded["image"], x.numpy())
    v1, v2 = ViewMaker("byol", 8, 5, MEAN, STD)(torch.from_numpy(decoded["image"]), decoded["id"], epoch=0)
    np.testing.assert_array_equal(v1.numpy(), pipeline["view1"])
    np.testing.assert_array_equal(v2.numpy(), pipeline["view2"])
    assert np.array_equal(decoded["label"], pipeline["label"]) and np.array_equal(decoded["id"], pipeline["id"])


def test_fit_canvas_keeps_exact_images_and_centre_crops_others():
    square = _batch(1, 10)[0]
    assert fit_canvas(square, 10) is square
    wide = torch.zeros((3, 20, 40), dtype=torch.uint8)
    wide[:, :, 10:30] = 200  # the centre square of the wide image is bright, its sides dark
    out = fit_canvas(wide, 20)  # short side already 20: only the centre square is cut out
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8 and int(out.min()) == 200
    smaller = fit_canvas(wide, 10)  # resized to 10×20 first (antialiased, so only the border columns blur)
    assert smaller.shape == (3, 10, 10) and int(smaller[:, :, 2:-2].min()) == 200
    assert fit_canvas(torch.zeros((1, 5, 7), dtype=torch.uint8), 8).shape == (1, 8, 8)


def test_decode_canvas_prefers_the_setting_then_the_datasets_own_size():
    def manifest(size: int | None) -> Manifest:
        return Manifest(class_names=["a"], superclass_names=[], class_to_superclass=None, channels=3,
                        image_size=size, mean=list(MEAN), std=list(STD), splits={})

    assert decode_canvas(manifest(28), 28) == 28
    assert decode_canvas(manifest(None), 224) == 256
    assert decode_canvas(manifest(None), 224, decode_size=300) == 300
    assert decode_canvas(manifest(32), 24) == 32
