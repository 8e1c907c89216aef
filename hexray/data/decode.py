"""Decode encoded image bytes to uint8 C×H×W tensors; undecodable images are reported, not raised.

Why here and not in the augmentation: a corrupt or truncated file in a million-image dataset must cost one
sample (counted as a metric), never the run.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F


def decode_image(data: bytes, channels: int) -> torch.Tensor | None:
    """C×H×W uint8 tensor, or None when Pillow cannot fully decode the bytes (corrupt or truncated)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = "L" if channels == 1 else "RGB"
            array = np.array(im if im.mode == mode else im.convert(mode))  # convert() copies even a no-op
    except Exception:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, ValueError...) on bad bytes
        return None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_batch(images: np.ndarray | list, channels: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """Decoded images and the boolean mask of rows that decoded (the others are to be dropped and counted)."""
    decoded = [decode_image(bytes(b), channels) if b is not None else None for b in images]
    ok = np.array([d is not None for d in decoded], dtype=bool)
    return [d for d in decoded if d is not None], ok


def resize_center_crop(image: torch.Tensor, size: int, crop_fraction: float) -> torch.Tensor:
    """Eval view: resize the shorter side to size/crop_fraction (antialiased), then centre-crop size×size."""
    h, w = image.shape[-2:]
    short = max(size, round(size / crop_fraction))
    if min(h, w) != short:
        scale = short / min(h, w)
        new = (max(short, round(h * scale)), max(short, round(w * scale)))
        image = F.interpolate(image[None].float(), size=new, mode="bilinear", antialias=True,
                              align_corners=False)[0]
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top : top + size, left : left + size].float()


def fit_canvas(image: torch.Tensor, canvas: int) -> torch.Tensor:
    """uint8 C×canvas×canvas: the image itself when it already is that, else its short side resized to `canvas`
    (antialiased) and the centre square cut out, so every row of a decode-only batch has one shape."""
    if tuple(image.shape[-2:]) == (canvas, canvas):
        return image
    return resize_center_crop(image, canvas, 1.0).round_().clamp_(0, 255).to(torch.uint8)
