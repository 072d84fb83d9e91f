"""Images as the weights expect them: decoded, BGR, shorter side 600 (longer <= 1000), means off, padded.

Dimension legend: N images, H x W pixels.

py-bottom-up-attention reads with ``cv2.imread`` (BGR, EXIF orientation applied, grey and CMYK made
3-channel) and resizes the uint8 image with detectron2's ResizeTransform (Pillow, bilinear). We read
with Pillow (an allowed dependency; no OpenCV): EXIF transpose, ``convert("RGB")``, then reverse the
channels. JPEG decoders may differ by a grey level on some pixels (libjpeg versions); everything after
decoding follows detectron2.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from switchbert.data.errors import DataError
from switchbert.data.extract.config import ExtractConfig

MAX_PIXELS = 200_000_000
"""Images with more pixels are refused before decoding (Pillow's decompression-bomb guard, raised)."""

ImageInput = Union[str, Path, np.ndarray]


class BadImageError(DataError):
    """An input that cannot be turned into a detector input; names the file and what is wrong."""


@dataclass
class LoadedImage:
    """A decoded image: ``bgr`` (H, W, 3) uint8 in the model's channel order and its id."""

    image_id: str
    bgr: np.ndarray


def load_image(path: Union[str, Path], image_id: str, run: ExtractConfig) -> LoadedImage:
    """Decodes ``path`` into (H, W, 3) uint8 in ``run.channel_order``; BadImageError on anything wrong."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadImageError(p, image_id, f"cannot read: {exc.strerror or exc}") from None
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # decode now: a truncated file fails here, not later
                if run.exif_transpose:
                    im = ImageOps.exif_transpose(im)
                rgb = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise BadImageError(p, image_id, "not an image (Pillow cannot identify the format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(p, image_id, f"too many pixels: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise BadImageError(p, image_id, f"corrupt image: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    check_size(rgb.shape[0], rgb.shape[1], p, image_id, run)
    return LoadedImage(image_id, np.ascontiguousarray(rgb[:, :, ::-1] if run.channel_order == "bgr" else rgb))


def check_size(h: int, w: int, path, image_id: str, run: ExtractConfig) -> None:
    """Refuses images too small or too elongated to give a feature map (BadImageError)."""
    if min(h, w) < run.min_image_side:
        raise BadImageError(path, image_id, f"too small: {w}x{h} pixels (the shorter side must be at least "
                                            f"{run.min_image_side})")
    if max(h, w) / min(h, w) > run.max_aspect_ratio:
        raise BadImageError(path, image_id, f"too elongated: {w}x{h} pixels, aspect ratio above "
                                            f"{run.max_aspect_ratio:g} (the resized shorter side would be "
                                            f"{round(run.max_size * min(h, w) / max(h, w))} pixels)")


def resized_size(h: int, w: int, run: ExtractConfig) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: (new height, new width), rounded half up."""
    scale = run.min_size / min(h, w)
    nh, nw = (run.min_size, scale * w) if h < w else (scale * h, run.min_size)
    if max(nh, nw) > run.max_size:
        s = run.max_size / max(nh, nw)
        nh, nw = nh * s, nw * s
    return int(nh + 0.5), int(nw + 0.5)


def resize(image: np.ndarray, run: ExtractConfig) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float32, resized as ``run.resize`` says."""
    h, w = image.shape[:2]
    nh, nw = resized_size(h, w, run)
    if run.resize == "pil":
        from PIL import Image

        out = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        return torch.from_numpy(out.astype(np.float32)).permute(2, 0, 1)
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False)[0]


def make_batch(images: list[np.ndarray], run: ExtractConfig,
               device: Union[str, torch.device] = "cpu") -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
    """Resizes, subtracts the means and zero-pads to one tensor.

    Returns:
        (N, 3, H, W) images, the resized (height, width) of each, the original (height, width) of each.
    """
    mean = torch.tensor(run.pixel_mean, dtype=torch.float32).view(3, 1, 1)
    resized = [resize(im, run) - mean for im in images]  # means off before padding: padding stays 0
    sizes = [(int(x.shape[1]), int(x.shape[2])) for x in resized]
    hmax, wmax = max(s[0] for s in sizes), max(s[1] for s in sizes)
    batch = torch.zeros((len(images), 3, hmax, wmax), dtype=torch.float32)
    for i, x in enumerate(resized):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
    return batch.to(device), sizes, [(int(im.shape[0]), int(im.shape[1])) for im in images]
