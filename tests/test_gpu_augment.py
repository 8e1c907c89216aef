"""The batched GPU augmentation: shapes, per-sample randomness, determinism, crop geometry (run on CPU)."""

from __future__ import annotations

import pytest
import torch

from hexray.data.gpu_augment import RECIPES, ViewRecipe, _crop_boxes, augment_view, pad_to_batch, two_views


def _images(n: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sizes = [(40, 60), (64, 64), (50, 33), (80, 20), (32, 32), (70, 45)]
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in sizes[:n]]


def test_two_views_shapes_and_normalisation():
    v1, v2 = two_views(_images(), recipe="simclr", output_size=24, generator=torch.Generator().manual_seed(1))
    assert v1.shape == v2.shape == (6, 3, 24, 24)
    assert v1.dtype == torch.float32 and torch.isfinite(v1).all() and torch.isfinite(v2).all()
    assert not torch.allclose(v1, v2)  # independent parameters per view


def test_deterministic_given_generator():
    a = two_views(_images(), recipe="byol", output_size=16, generator=torch.Generator().manual_seed(3))
    b = two_views(_images(), recipe="byol", output_size=16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_crop_boxes_stay_inside_each_image_and_respect_scale():
    sizes = torch.tensor([[h, w] for h, w in [(40, 60), (300, 200), (17, 90)] * 50], dtype=torch.float32)
    recipe = ViewRecipe(scale=(0.2, 0.6))
    boxes = _crop_boxes(sizes, recipe, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= sizes[:, 1]).all() and (y2 <= sizes[:, 0]).all()
    frac = (x2 - x1) * (y2 - y1) / (sizes[:, 0] * sizes[:, 1])
    in_range = (frac > 0.15) & (frac < 0.7)
    assert in_range.float().mean() > 0.9  # rounding and the centre-crop fallback excepted


def test_identity_recipe_reproduces_a_full_resize():
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    recipe = ViewRecipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0, blur_p=0)
    out = augment_view(image, torch.tensor([[16.0, 16.0]]), recipe, output_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.allclose(out * 255, image.float(), atol=1e-3)


def test_flip_and_grayscale_are_per_sample():
    batch = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    sizes = torch.full((64, 2), 8.0)
    recipe = ViewRecipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0.5, blur_p=0)
    out = augment_view(batch, sizes, recipe, output_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                       generator=torch.Generator().manual_seed(0))
    is_gray = (out[:, 0] - out[:, 1]).abs().amax((1, 2)) < 1e-6
    assert 10 < int(is_gray.sum()) < 54


def test_pad_to_batch_and_errors():
    batch, sizes = pad_to_batch(_images(3))
    assert batch.shape == (3, 3, 64, 64) and sizes[2].tolist() == [50.0, 33.0]
    with pytest.raises(ValueError, match="images"):
        pad_to_batch([])
    with pytest.raises(ValueError, match="recipe"):
        two_views(_images(2), recipe="nope")
    from typing import get_args, get_type_hints

    from hexray.config.sections import DataConfig

    allowed = set(get_args(get_type_hints(DataConfig)["recipe"]))  # what `data.recipe` validates against
    assert set(RECIPES) == allowed == {"simclr", "byol", "simclr_small", "dino"}  # a new recipe is named in both


@pytest.mark.parametrize("recipe", ["simclr", "byol"])
def test_grey_batch_stays_one_channel_and_matches_its_rgb_copy(recipe):
    grey = torch.randint(0, 256, (32, 1, 20, 20), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    sizes = torch.full((32, 2), 20.0)
    for view in RECIPES[recipe]:
        one = augment_view(grey, sizes, view, output_size=16, mean=(0.5,), std=(0.25,),
                           generator=torch.Generator().manual_seed(9))
        three = augment_view(grey.expand(-1, 3, -1, -1), sizes, view, output_size=16, mean=(0.5,) * 3,
                             std=(0.25,) * 3, generator=torch.Generator().manual_seed(9))
        assert one.shape == (32, 1, 16, 16)
        assert torch.allclose(one[:, 0], three[:, 0], atol=1e-4)  # same draws; skipped ops are no-ops on grey
    with pytest.raises(ValueError, match="one value per channel"):
        augment_view(grey, sizes, RECIPES[recipe][0], output_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert two_views(grey, recipe=recipe, output_size=12)[0].shape == (32, 1, 12, 12)


def test_roi_align_kernel_is_torchvision_bit_for_bit():
    from torchvision.ops import roi_align as reference

    from hexray.data.roi_align_op import roi_align

    gen = torch.Generator().manual_seed(0)
    for channels, side, out in ((1, 28, 28), (3, 64, 24), (3, 20, 48)):  # same size, down- and upsampling
        batch = torch.randint(0, 256, (12, channels, side, side), generator=gen, dtype=torch.uint8).float()
        sizes = torch.full((12, 2), float(side))
        boxes = torch.cat([_crop_boxes(sizes, recipe, gen) for recipe in (ViewRecipe(), ViewRecipe(scale=(0.9, 1)))])
        rois = torch.cat([torch.arange(12.0).repeat(2)[:, None], boxes], dim=1)
        got = roi_align(batch, rois, out, sampling_ratio=0, aligned=True)
        assert torch.equal(got, reference(batch, rois, out, 1.0, 0, True))


def test_augmenting_imports_neither_torchvision_nor_dynamo():
    """What a training worker imports: torchvision would pull in torch._dynamo, 2-3 s per worker process."""
    import subprocess
    import sys

    code = ("import sys, torch, hexray.train.loop, hexray.cli\n"
            "from hexray.data.gpu_augment import two_views\n"
            "two_views(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), output_size=28)\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
