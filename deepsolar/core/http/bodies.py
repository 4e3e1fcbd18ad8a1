"""Checks on a response: is its body the expected image, how long does Retry-After ask to wait.

:func:`decode_image` (strict, size read from the header first, :class:`BadBody` saying why a
body is not usable), :func:`image_header_size` and :func:`parse_retry_after`.
"""

from __future__ import annotations

import email.utils
import io
import time
from datetime import UTC

import numpy as np


class BadBody(Exception):
    """A 200 response whose body is not the expected image (HTML page, truncated, wrong size)."""


# Largest image a response may hold, checked from its header before any pixel is decoded (a
# 640-px Static Maps tile is 0.4 MP, a 512-px retina server tile 0.26 MP).
MAX_IMAGE_PIXELS = 4096 * 4096


def image_header_size(body: bytes) -> tuple[int, int]:
    """(width, height) read from an image's header only, without decoding any pixel.

    Args:
        body: The encoded image (PNG, JPEG, any format Pillow reads).

    Returns:
        ``(width, height)`` in px.

    Raises:
        BadBody: If the header is not an image's, or announces a decompression bomb.
    """
    from PIL import Image, UnidentifiedImageError

    # (No warnings.catch_warnings here: it changes process-wide state and is not thread-safe.)
    try:
        with Image.open(io.BytesIO(body)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadBody(
            f"body does not decode as an image ({len(body)} bytes; {type(err).__name__})"
        ) from None
    except Image.DecompressionBombError:
        raise BadBody(f"image header announces a huge image ({len(body)} bytes)") from None


def decode_image(body: bytes, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image body to RGB uint8 (H, W, 3), strictly; BadBody says why it is not usable.

    Never echoes the body's content (it may be any local file, or a page with a key in it). The
    size is read from the header before decoding, so an oversized image costs no memory. The
    decode is strict: truncated data, a PNG chunk whose CRC does not match, and JPEG data that
    libjpeg-turbo reports as corrupt (``Corrupt JPEG data ...``, which other decoders only print
    while returning wrong pixels) are all BadBody.

    Args:
        body: The encoded image bytes.
        expected_size: ``(width, height)`` in px the image must have; None: any size up to
            ``MAX_IMAGE_PIXELS``.

    Returns:
        The RGB image, uint8 of shape (H, W, 3).

    Raises:
        BadBody: If the body is empty, text, truncated, corrupt, of the wrong size or too large.
    """
    if not body:
        raise BadBody("empty body")
    if body[:64].lstrip().startswith((b"<", b"{")):
        raise BadBody(f"body is text (HTML, XML or JSON), not an image ({len(body)} bytes)")
    if body.startswith(b"\x89PNG") and b"IEND" not in body[-16:]:
        raise BadBody(f"PNG is truncated ({len(body)} bytes, no IEND chunk)")
    if body.startswith(b"\xff\xd8") and not body.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise BadBody(f"JPEG is truncated ({len(body)} bytes, no end marker)")
    w, h = image_header_size(body)
    if expected_size is not None and (w, h) != tuple(expected_size):
        ew, eh = expected_size
        raise BadBody(f"image is {w}x{h} px, expected {ew}x{eh}")
    if w * h > MAX_IMAGE_PIXELS:
        raise BadBody(f"image is {w}x{h} px, larger than any tile ({MAX_IMAGE_PIXELS:,} px max)")
    if body.startswith(b"\xff\xd8"):
        arr = _decode_jpeg_strict(body)
    else:
        arr = _decode_pil_strict(body)
    if arr.shape[:2] != (h, w):  # pragma: no cover - a decoder disagreeing with its own header
        raise BadBody(f"image decodes to {arr.shape[1]}x{arr.shape[0]} px, header says {w}x{h}")
    return arr


def _decode_jpeg_strict(body: bytes) -> np.ndarray:
    import simplejpeg

    try:
        arr = simplejpeg.decode_jpeg(body, colorspace="RGB", strict=True)
    except ValueError as err:  # simplejpeg's error for corrupt data and libjpeg warnings
        why = " ".join(str(err).split())[:120]
        raise BadBody(f"JPEG data is corrupt ({why})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _decode_pil_strict(body: bytes) -> np.ndarray:
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow globally: not for tiles
        raise BadBody("refusing to decode with PIL.ImageFile.LOAD_TRUNCATED_IMAGES set")
    try:
        if body.startswith(b"\x89PNG"):
            with Image.open(io.BytesIO(body)) as im:
                im.verify()  # every chunk's CRC, IDAT included
        with Image.open(io.BytesIO(body)) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken data
        # the type only: a decoder's message may quote bytes of the body
        raise BadBody(f"image data is corrupt ({type(err).__name__})") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    Args:
        value: The header's value, or None.
        now: Current time as a Unix timestamp in seconds (for HTTP dates); None: ``time.time()``.

    Returns:
        The wait in seconds (>= 0), or None if absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_ts = time.time() if now is None else now
    return max(0.0, when.timestamp() - now_ts)
