"""Batched two-view augmentation on the GPU, with independent random parameters per sample.

Why: at ImageNet scale a GPU trains ResNet-50 faster than a dozen CPU cores can decode JPEGs and run
torchvision's per-image transforms. Here the encoded bytes go to the GPU (`torchvision.io.decode_jpeg(...,
device="cuda")`) and every augmentation is one batched kernel over the whole batch:

- random resized crop + horizontal flip: one `roi_align` over a zero-padded batch (bilinear, per-sample box);
- colour jitter (brightness, contrast, saturation, hue), applied in that fixed order (torchvision shuffles the
  order per image; the distribution of outputs is close but not identical — noted in docs/performance.md);
  hue is a rotation in YIQ space (a 3×3 matrix per sample), which is the linear approximation of an HSV shift;
- random grayscale, Gaussian blur (per-sample σ through a grouped separable convolution), solarization;
- normalisation.

The recipes mirror design/HEX.md: `simclr` (symmetric) and `byol` (asymmetric blur/solarize probabilities).
Pure torch: usable on CPU tensors too (tests run it there).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hexray.data.roi_align_op import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)  # ImageNet's, averaged over channels


@dataclass(frozen=True)
class ViewRecipe:
    """Parameters of one augmented view (probabilities and ranges as in SimCLR/BYOL)."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0


RECIPES: dict[str, tuple[ViewRecipe, ViewRecipe]] = {
    "simclr": (
        ViewRecipe(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2),
        ViewRecipe(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2),
    ),
    "byol": (ViewRecipe(blur_p=1.0, solarize_p=0.0), ViewRecipe(blur_p=0.1, solarize_p=0.2)),
    # DINO's global crops: BYOL's pair at crop scale (0.4, 1) (its local crops: `local_views`)
    "dino": (ViewRecipe(scale=(0.4, 1.0), blur_p=1.0), ViewRecipe(scale=(0.4, 1.0), blur_p=0.1, solarize_p=0.2)),
    # small images (28–64 px, e.g. Fashion-MNIST, CIFAR): SimCLR's CIFAR practice — no blur (σ up to 2 px erases
    # a 28-px object), crops of at least 20% of the image, milder colour jitter
    "simclr_small": (
        ViewRecipe(scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.0),
        ViewRecipe(scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.0),
    ),
}


def pad_to_batch(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack C×H×W uint8 images of different sizes into one zero-padded batch; returns (batch, sizes[h, w])."""
    if not images:
        raise ValueError("images must be a non-empty list")
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], dtype=torch.float32)
    return batch, sizes.to(batch.device)


def _crop_boxes(sizes: torch.Tensor, recipe: ViewRecipe, generator: torch.Generator | None) -> torch.Tensor:
    """Random-resized-crop boxes (x1, y1, x2, y2) per sample; 10 tries like torchvision, then a centre crop."""
    n, tries = sizes.shape[0], 10
    device = sizes.device
    h, w = sizes[:, 0:1], sizes[:, 1:2]
    area = h * w
    u = torch.rand((n, tries, 4), generator=generator, device=device)
    scale = recipe.scale[0] + (recipe.scale[1] - recipe.scale[0]) * u[..., 0]
    log_r = math.log(recipe.ratio[0]) + (math.log(recipe.ratio[1]) - math.log(recipe.ratio[0])) * u[..., 1]
    ratio = torch.exp(log_r)
    cw = torch.sqrt(area * scale * ratio).round()
    ch = torch.sqrt(area * scale / ratio).round()
    ok = (cw <= w) & (ch <= h) & (cw > 0) & (ch > 0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=device))
    idx = first.clamp(min=0).unsqueeze(1)
    cw = cw.gather(1, idx).squeeze(1)
    ch = ch.gather(1, idx).squeeze(1)
    x0 = ((w.squeeze(1) - cw) * u[..., 2].gather(1, idx).squeeze(1)).floor()
    y0 = ((h.squeeze(1) - ch) * u[..., 3].gather(1, idx).squeeze(1)).floor()
    fallback = first < 0  # centre crop of the largest in-ratio box
    side = torch.minimum(h.squeeze(1), w.squeeze(1))
    cw = torch.where(fallback, side, cw)
    ch = torch.where(fallback, side, ch)
    x0 = torch.where(fallback, ((w.squeeze(1) - side) / 2).floor(), x0)
    y0 = torch.where(fallback, ((h.squeeze(1) - side) / 2).floor(), y0)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * a + (1 - factor) * b).clamp_(0, 1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Grayscale of an RGB batch; a grey batch is its own."""
    return x if x.shape[1] == 1 else _grayscale(x)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` (fraction of a turn, per sample) in YIQ space."""
    to_yiq = _RGB_TO_YIQ.to(x)
    to_rgb = torch.linalg.inv(to_yiq)
    theta = shift * 2 * math.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros((x.shape[0], 3, 3), device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = to_rgb @ rot @ to_yiq  # N×3×3
    out = torch.einsum("nij,njhw->nihw", matrix, x)
    return out.clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur with kernel size ~10% of the image, via grouped separable convolutions."""
    n, c, h, w = x.shape
    size = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    coords = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    kernel = torch.exp(-(coords[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # N×K
    kernel = kernel.repeat_interleave(c, dim=0)  # (N·C)×K
    flat = x.reshape(1, n * c, h, w)
    pad = size // 2
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def _coin(n: int, p: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand((n, 1, 1, 1), generator=generator, device=like.device) < p).to(like.dtype)


def _uniform(n: int, low: float, high: float, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, 1, 1, 1), generator=gen, device=like.device, dtype=like.dtype)


def augment_view(
    batch: torch.Tensor,
    sizes: torch.Tensor,
    recipe: ViewRecipe,
    *,
    output_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One augmented view of a padded uint8 batch (N×C×H×W, C = 3 or 1) → normalised float32 N×C×S×S.

    A grey batch (C = 1) stays one channel: saturation, hue and grayscale leave a grey image unchanged, so they
    are skipped (their random draws are still made, so a grey batch gets exactly the first channel of what its
    3-channel copy would get), which makes grey data three times cheaper to augment.
    """
    if batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(f"batch must be N×3×H×W or N×1×H×W, got shape {tuple(batch.shape)}")
    grey = batch.shape[1] == 1
    if len(mean) != batch.shape[1] or len(std) != batch.shape[1]:
        raise ValueError(f"mean and std need one value per channel ({batch.shape[1]}), got {mean} and {std}")
    n = batch.shape[0]
    boxes = _crop_boxes(sizes, recipe, generator)
    rois = torch.cat([torch.arange(n, device=batch.device, dtype=torch.float32)[:, None], boxes], dim=1)
    x = roi_align(batch.float(), rois, output_size, sampling_ratio=0, aligned=True) / 255.0
    flip = _coin(n, recipe.flip_p, x, generator).bool().view(n)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)

    jitter = _coin(n, recipe.jitter_p, x, generator)
    b = _uniform(n, 1 - recipe.brightness, 1 + recipe.brightness, x, generator)
    c = _uniform(n, 1 - recipe.contrast, 1 + recipe.contrast, x, generator)
    s = _uniform(n, 1 - recipe.saturation, 1 + recipe.saturation, x, generator)
    hue = _uniform(n, -recipe.hue, recipe.hue, x, generator).view(n)
    y = (x * b).clamp(0, 1)
    y = _blend(y, _luma(y).mean((1, 2, 3), keepdim=True), c)
    if not grey:
        y = _blend(y, _grayscale(y), s)
        y = _hue_rotate(y, hue)
    x = jitter * y + (1 - jitter) * x

    gray = _coin(n, recipe.gray_p, x, generator)
    if not grey:
        x = gray * _grayscale(x).expand_as(x) + (1 - gray) * x
    if recipe.blur_p > 0:
        sigma = _uniform(n, 0.1, 2.0, x, generator).view(n)
        blurred = _gaussian_blur(x, sigma)
        blur = _coin(n, recipe.blur_p, x, generator)
        x = blur * blurred + (1 - blur) * x
    if recipe.solarize_p > 0:
        solar = _coin(n, recipe.solarize_p, x, generator)
        x = solar * torch.where(x >= 0.5, 1 - x, x) + (1 - solar) * x
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def two_views(
    images: list[torch.Tensor] | torch.Tensor,
    *,
    recipe: str = "simclr",
    output_size: int = 224,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of decoded uint8 images (a list of C×H×W or an N×C×H×W batch; C is
    kept: 3 for colour, 1 for grey)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    batch, sizes = (images, None) if isinstance(images, torch.Tensor) else pad_to_batch(images)
    mean, std = (GREY_MEAN, GREY_STD) if batch.shape[1] == 1 else (IMAGENET_MEAN, IMAGENET_STD)
    return recipe_views(batch, sizes, recipe, output_size=output_size, mean=mean, std=std, generator=generator)


def recipe_views(
    batch: torch.Tensor,
    sizes: torch.Tensor | None,
    recipe: str,
    *,
    output_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator | None = None,
    crop_scale: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's two views of a uint8 batch; `sizes` None = every image fills the batch's H×W; `crop_scale`
    (low, high) replaces both views' random-resized-crop scale range."""
    if sizes is None:
        sizes = torch.tensor([list(batch.shape[-2:])], dtype=torch.float32, device=batch.device).expand(
            batch.shape[0], 2)
    first, second = RECIPES[recipe]
    if crop_scale is not None:
        first, second = (dataclasses.replace(r, scale=tuple(crop_scale)) for r in (first, second))
    return (
        augment_view(batch, sizes, first, output_size=output_size, mean=mean, std=std, generator=generator),
        augment_view(batch, sizes, second, output_size=output_size, mean=mean, std=std, generator=generator),
    )


def local_views(
    batch: torch.Tensor,
    sizes: torch.Tensor | None,
    recipe: str,
    *,
    count: int,
    output_size: int,
    scale: tuple[float, float],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """`count` small crops for multi-crop methods (DINO, SwAV): the recipe's first view with blur p = 0.5 and no
    solarization (DINO's local transform), cropped at `scale` of the image and resized to `output_size`. Drawn
    after the global pair, so the global views do not change with `count`."""
    if sizes is None:
        sizes = torch.tensor([list(batch.shape[-2:])], dtype=torch.float32, device=batch.device).expand(
            batch.shape[0], 2)
    crop = dataclasses.replace(RECIPES[recipe][0], scale=scale, blur_p=0.5, solarize_p=0.0)
    return [augment_view(batch, sizes, crop, output_size=output_size, mean=mean, std=std, generator=generator)
            for _ in range(count)]
