"""Image uploads: their format from the magic number, their size from the header.

PNG, JPEG and TIFF images are documents the OCR stage reads. Nothing here decodes a
pixel: the width and height come from the header (PNG's ``IHDR``, JPEG's start-of-frame
marker, each TIFF directory), so an image that would expand to gigabytes (a
decompression bomb: a few kilobytes of compressed data declaring 100,000 x 100,000
pixels) is refused before any decoder sees it. A multi-page TIFF has one directory per
page; every page is counted, and the largest one decides.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

import msgspec

from pipeline.errors import ContentTooLarge, CorruptContent

ImageFormat = Literal["png", "jpeg", "tiff"]

DEFAULT_MAX_IMAGE_PIXELS: Final = 40_000_000
"""An A3 page scanned at 400 dpi (31 megapixels) fits; OCR of one such page stays well
under the sandbox's memory cap."""
MAX_TIFF_PAGES: Final = 10_000
"""Directories read from one TIFF at most: a chain longer than this is refused as
damaged (the OCR page limit, far lower, applies later)."""

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_TIFF_MAGICS: Final = (b"II*\x00", b"MM\x00*")
_NAMES: Final[dict[ImageFormat, str]] = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
# Start-of-frame markers (SOF0-SOF15 less DHT, JPG and DAC): they carry the size.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xDA)})
_JPEG_SOS: Final = 0xDA
_TIFF_WIDTH: Final = 256
_TIFF_LENGTH: Final = 257
_TIFF_SHORT: Final = 3
_TIFF_LONG: Final = 4


class ImageInfo(msgspec.Struct, frozen=True):
    """What an image's header says: its format and each page's size."""

    format: ImageFormat
    sizes: list[tuple[int, int]]
    """(width, height) of each page, in order: one for PNG and JPEG."""

    @property
    def pages(self) -> int:
        return len(self.sizes)

    @property
    def largest(self) -> int:
        """Pixels of the largest page."""
        return max(width * height for width, height in self.sizes)

    @property
    def name(self) -> str:
        return _NAMES[self.format]


def image_format(data: bytes) -> ImageFormat | None:
    """The image format ``data`` starts like, if it is one OCR reads."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_TIFF_MAGICS):
        return "tiff"
    return None


def read_image_info(data: bytes) -> ImageInfo:
    """The format and page sizes of a PNG, JPEG or TIFF image, from its header.

    Raises:
        CorruptContent: not one of them, or a header that cannot be read.
    """
    found = image_format(data)
    if found is None:
        raise CorruptContent("the file is not a PNG, JPEG or TIFF image")
    if found == "png":
        sizes = [_png_size(data)]
    elif found == "jpeg":
        sizes = [_jpeg_size(data)]
    else:
        sizes = _tiff_sizes(data)
    info = ImageInfo(format=found, sizes=sizes)
    if any(width < 1 or height < 1 for width, height in sizes):
        raise _damaged(found, "its header declares an image without pixels")
    return info


def check_pixels(info: ImageInfo, max_pixels: int) -> None:
    """Refuse an image with a page of more than ``max_pixels`` pixels.

    Raises:
        ContentTooLarge: with the page's size and the limit in the reason.
    """
    for number, (width, height) in enumerate(info.sizes, start=1):
        if width * height > max_pixels:
            where = f"page {number} of the {info.name} image" if info.pages > 1 else info.name
            raise ContentTooLarge(
                f"{where} is {width} x {height} pixels ({width * height:,}), more than the "
                f"limit of {max_pixels:,} pixels; scale it down (300 dpi is plenty for text) "
                "and upload it again"
            )


def _damaged(found: ImageFormat, problem: str) -> CorruptContent:
    return CorruptContent(
        f"{_NAMES[found]} image is damaged ({problem}); export it again and upload it"
    )


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk must come first: length 13, type, width, height.
    if len(data) < 24 or data[8:16] != b"\x00\x00\x00\rIHDR":
        raise _damaged("png", "it does not start with an IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    position = 2
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            raise _damaged("jpeg", f"no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if length < 2:
            raise _damaged("jpeg", f"a segment of length {length}")
        if marker in _JPEG_SOF:
            if position + 9 > end:
                break
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            if height == 0:
                raise _damaged("jpeg", "its height is only given after the image data")
            return width, height
        if marker == _JPEG_SOS:
            break
        position += 2 + length
    raise _damaged("jpeg", "no frame header before the image data")


def _tiff_sizes(data: bytes) -> list[tuple[int, int]]:
    order = "<" if data.startswith(b"II") else ">"
    if len(data) < 8:
        raise _damaged("tiff", "its header is truncated")
    (offset,) = struct.unpack(order + "I", data[4:8])
    sizes: list[tuple[int, int]] = []
    seen: set[int] = set()
    while offset:
        if offset in seen or len(sizes) >= MAX_TIFF_PAGES:
            raise _damaged("tiff", "its page directories loop or never end")
        seen.add(offset)
        size, offset = _tiff_directory(data, offset, order)
        sizes.append(size)
    if not sizes:
        raise _damaged("tiff", "it has no page")
    return sizes


def _tiff_directory(data: bytes, offset: int, order: str) -> tuple[tuple[int, int], int]:
    """The (width, height) one directory declares, and the next directory's offset."""
    if offset + 2 > len(data):
        raise _damaged("tiff", f"a page directory at byte {offset}, past the end")
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    entries = offset + 2
    after = entries + 12 * count
    if after + 4 > len(data):
        raise _damaged("tiff", f"a page directory at byte {offset} is truncated")
    found: dict[int, int] = {}
    for start in range(entries, after, 12):
        tag, kind, values = struct.unpack(order + "HHI", data[start : start + 8])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and values == 1:
            if kind == _TIFF_SHORT:
                (found[tag],) = struct.unpack(order + "H", data[start + 8 : start + 10])
            elif kind == _TIFF_LONG:
                (found[tag],) = struct.unpack(order + "I", data[start + 8 : start + 12])
    if _TIFF_WIDTH not in found or _TIFF_LENGTH not in found:
        raise _damaged("tiff", "a page without a width or a height")
    (following,) = struct.unpack(order + "I", data[after : after + 4])
    return (found[_TIFF_WIDTH], found[_TIFF_LENGTH]), following
