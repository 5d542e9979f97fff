"""Documents in and out of the fax device.

Outgoing: a PDF (rendered with pypdfium2), a PNG, a JPEG or any TIFF becomes a TIFF-F file that spandsp
0.0.6 sends with ``t30_set_tx_file``: one IFD per page, 1 bit per pixel, PhotometricInterpretation
min-is-white, CCITT T.6 (Group 4) data, exactly 1728 pixels wide (T.4 §2.2: 1728 picture elements along a
215 mm scan line), XResolution 204 and YResolution 98, 196 or 391 per inch.

Why those resolution values: spandsp 0.0.6 (``t4_tx.c``, ``get_tiff_directory_info``) converts the TIFF
resolution to pels per centimetre and accepts a value within ±5 % of 80.3 (R8, 204/in) horizontally and of
38.5, 77 or 154 lines/cm vertically (T.4 §2.2 standard, fine, superfine); anything it cannot match is silently
sent as *standard*, which would squash a fine page to half its height. 98/in = 38.58/cm, 196/in = 77.17/cm
and 391/in = 153.9/cm all match.

Incoming: a received TIFF becomes a PDF through img2pdf, which copies single-strip Group 4 data into the PDF
unchanged (other codings are re-encoded losslessly), with the page size taken from the resolution tags so a
standard or fine page keeps its physical size; and PNG previews corrected for the non-square fax pixel.

Bilevel conversion (how 8-point text stays legible): every page is rendered or resampled to the target grid
in grayscale, with area averaging when shrinking, so a stroke thinner than a fax pixel becomes a gray pixel
instead of vanishing. Text and line art are then cut at a fixed threshold (:data:`TEXT_THRESHOLD`, darker
is black), generous enough that such gray pixels stay black. Photographs and gray fills are found by a
local histogram test (a pixel whose neighbourhood is mostly mid-tone, see :data:`PHOTO_DENSITY`; text has
gray pixels only along its edges) and only those regions are Floyd–Steinberg dithered, so a photo keeps its
tones while text next to it keeps clean edges.

Bad input (not a document, a password-protected or corrupt PDF, zero pages, too many pages, absurd
dimensions, a decompression bomb) raises :class:`DocumentError` with a one-line reason; outputs are written
to a temporary file in the destination directory, fsynced and renamed, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import re
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import img2pdf
import pypdfium2 as pdfium
from PIL import Image, ImageChops, ImageFilter, ImageOps, TiffImagePlugin, UnidentifiedImageError

__all__ = [
    "FAX_WIDTH_PX",
    "DocumentError",
    "PageInfo",
    "PaperSize",
    "PreparedDocument",
    "Resolution",
    "detect_kind",
    "prepare_fax_tiff",
    "read_tiff_pages",
    "render_tiff_page",
    "sample_document",
    "tiff_page_info",
    "tiff_previews",
    "tiff_to_pdf",
]

logger = logging.getLogger(__name__)

#: T.4 §2.2: 1728 picture elements on the 215 mm scan line of ISO A4 (8.03 pels/mm, 204 per inch).
FAX_WIDTH_PX = 1728
#: Horizontal resolution of R8 in pels per inch (T.4 §2.2: 8.03 pels/mm).
FAX_X_DPI = 204
#: Width of the scan line in inches (1728 / 204).
FAX_WIDTH_IN = FAX_WIDTH_PX / FAX_X_DPI

#: Gray level (0 black .. 255 white) below which a text or line-art pixel becomes black. Set well above
#: mid-gray so that a stroke covering only part of a fax pixel (8-point text at 98 lines/inch) survives.
TEXT_THRESHOLD = 176
#: Gray levels counted as mid-tones by the photo detector.
MIDTONE_RANGE = (40, 215)
#: Radius (in pixels) of the neighbourhood the photo detector looks at, and of the growth of its regions.
PHOTO_RADIUS_PX = 6
#: Fraction of mid-tone pixels in the neighbourhood above which a pixel belongs to a photo or gray fill.
PHOTO_DENSITY = 0.6

#: Largest source image accepted, in pixels (guards against decompression bombs before decoding).
MAX_SOURCE_PIXELS = 100_000_000
#: Largest accepted ratio between the long and the short side of a page.
MAX_ASPECT_RATIO = 50.0
#: Smallest accepted PDF page side, in points.
MIN_PDF_SIDE_PT = 1.0

#: TIFF tag numbers used when checking and patching the output.
_TAG_PHOTOMETRIC = 262
_TAG_PAGE_NUMBER = 297
_TAG_SOFTWARE = 305
_STRIP_SIZE = 1 << 30  # one strip per page: spandsp and img2pdf both prefer it

_PDFIUM_LOCK = threading.Lock()  # PDFium is not thread-safe


def _file_mode() -> int:
    """Mode for new files: 0666 less the process umask (mkstemp would leave 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()

#: What Pillow raises on a malformed file; the list is long because its decoders were not written to a
#: single error contract (e.g. "Missing dimensions" in a TIFF is a TypeError).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    TypeError,
    KeyError,
    IndexError,
    ZeroDivisionError,
    MemoryError,
)


class DocumentError(Exception):
    """A document cannot be read, converted or written; ``str()`` is a one-line reason for the user."""


class Resolution(enum.Enum):
    """T.4 §2.2 vertical resolutions with the R8 horizontal resolution; the value is lines per inch."""

    STANDARD = 98  # 3.85 lines/mm
    FINE = 196  # 7.7 lines/mm
    SUPERFINE = 391  # 15.4 lines/mm

    @property
    def x_dpi(self) -> int:
        """Pels per inch along the scan line (R8)."""
        return FAX_X_DPI

    @property
    def y_dpi(self) -> int:
        """Scan lines per inch."""
        return self.value

    @classmethod
    def from_name(cls, name: str) -> Resolution:
        """Parse ``standard``/``fine``/``superfine`` (any case), for the CLI and config."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(m.name.lower() for m in cls)
            raise DocumentError(f"unknown resolution {name!r} (choose from {choices})") from None


class PaperSize(enum.Enum):
    """Paper sizes a fax page is laid out on; the value is (width, length) in millimetres."""

    A4 = (210.0, 297.0)
    LETTER = (215.9, 279.4)
    LEGAL = (215.9, 355.6)

    @property
    def width_mm(self) -> float:
        return self.value[0]

    @property
    def length_mm(self) -> float:
        return self.value[1]

    @property
    def length_in(self) -> float:
        return self.value[1] / 25.4

    def height_px(self, resolution: Resolution) -> int:
        """Scan lines of one page of this paper at ``resolution`` (A4 fine: 2292)."""
        return round(self.length_in * resolution.y_dpi)

    @classmethod
    def from_name(cls, name: str) -> PaperSize:
        """Parse ``a4``/``letter``/``legal`` (any case), for the CLI and config."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(m.name.lower() for m in cls)
            raise DocumentError(f"unknown paper size {name!r} (choose from {choices})") from None


@dataclass(frozen=True)
class PreparedDocument:
    """A TIFF-F file ready for ``t30_set_tx_file``."""

    path: Path
    pages: int
    resolution: Resolution
    paper: PaperSize
    page_heights: tuple[int, ...]
    #: Per page: True where part of the page was detected as photographic and dithered.
    dithered: tuple[bool, ...] = ()

    @property
    def width(self) -> int:
        return FAX_WIDTH_PX


# --------------------------------------------------------------------------------------------------------
# Input kinds


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)


def detect_kind(path: Path | str) -> str:
    """Return ``"pdf"``, ``"png"``, ``"jpeg"`` or ``"tiff"`` from the file's magic bytes, not its name.

    A PDF header may follow a little junk (PDF 32000-1 §7.5.2 readers look in the first 1024 bytes).
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise DocumentError(f"{path.name}: empty file, not a document")
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"%PDF-" in head:
        return "pdf"
    raise DocumentError(f"{path.name}: not a document (expected PDF, PNG, JPEG or TIFF)")


# --------------------------------------------------------------------------------------------------------
# Geometry


def _check_aspect(where: str, width: float, height: float, shown: str) -> None:
    """Reject a page whose physical sides (any unit) are not positive or differ by more than
    :data:`MAX_ASPECT_RATIO`; ``shown`` is how the size is described to the user."""
    if not (width > 0 and height > 0):
        raise DocumentError(f"{where}: absurd page dimensions {shown}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise DocumentError(
            f"{where}: absurd page dimensions {shown} "
            f"(aspect ratio {ratio:.0f}:1, limit {MAX_ASPECT_RATIO:.0f}:1)"
        )


def _fit(width_in: float, height_in: float, resolution: Resolution, paper: PaperSize) -> tuple[int, int]:
    """Pixel size of the content on the fax grid: fill the scan line, unless the page would then be
    longer than the paper, in which case shrink to the paper length; physical aspect ratio is kept."""
    scale = min(FAX_WIDTH_IN / width_in, paper.length_in / height_in)
    cw = round(width_in * scale * FAX_X_DPI)
    ch = round(height_in * scale * resolution.y_dpi)
    return min(FAX_WIDTH_PX, max(1, cw)), min(paper.height_px(resolution), max(1, ch))


def _resample(gray: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Area-average when shrinking (thin strokes become gray, not gaps); bicubic when enlarging."""
    if gray.size == size:
        return gray
    shrinking = size[0] <= gray.width and size[1] <= gray.height
    return gray.resize(size, Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------------------
# Bilevel conversion


def _photo_mask(gray: Image.Image) -> Image.Image | None:
    """Mask (mode ``L``, 255 = dither) of the photographic and gray-filled regions, or None if there are none.

    A pixel is in the core of such a region when most of its neighbourhood (:data:`PHOTO_RADIUS_PX`) is
    mid-tone: anti-aliased text has gray pixels only along its edges, a photograph or a gray fill is gray
    throughout. The core is then grown by the same radius so the region's border is dithered too; pure
    black and white pixels survive Floyd–Steinberg unchanged, so text over a gray fill stays intact.
    """
    lo, hi = MIDTONE_RANGE
    midtones = gray.point([255 if lo <= v <= hi else 0 for v in range(256)])
    density = midtones.filter(ImageFilter.BoxBlur(PHOTO_RADIUS_PX))
    cut = round(PHOTO_DENSITY * 255)
    core = density.point([255 if v >= cut else 0 for v in range(256)])
    if core.getbbox() is None:
        return None
    return core.filter(ImageFilter.BoxBlur(PHOTO_RADIUS_PX)).point([255 if v > 0 else 0 for v in range(256)])


def _binarize(gray: Image.Image) -> tuple[Image.Image, bool]:
    """Return the 1-bit image (mode ``1``, 0 = black) and whether any part of it was dithered."""
    text = gray.point([0 if v < TEXT_THRESHOLD else 255 for v in range(256)], "1")
    mask = _photo_mask(gray)
    if mask is None:
        return text, False
    dithered = gray.convert("1", dither=Image.Dither.FLOYDSTEINBERG)
    return Image.composite(dithered, text, mask), True


def _to_gray(frame: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit gray; transparency is flattened onto white paper."""
    mode = frame.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        hi = frame.getextrema()[1]
        divisor = 256 if isinstance(hi, int) and hi > 255 else 1
        return frame.convert("I").point(lambda v: v / divisor).convert("L")
    if mode == "F":
        return frame.convert("L")
    if mode == "P" and "transparency" in frame.info:
        frame = frame.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = frame.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return frame.convert("L")


# --------------------------------------------------------------------------------------------------------
# Sources: each yields the pages of a document as gray images already sized to the fax grid


def _looks_pageless(path: Path) -> bool:
    """Whether a PDF that PDFium refused has an empty page tree (PDFium rejects those as malformed), only to
    give the user the right reason; PDF 32000-1 §7.7.3.2: a /Pages node with /Count 0 and no /Page object."""
    try:
        data = path.read_bytes()[:1_000_000]
    except OSError:
        return False
    return bool(re.search(rb"/Count\s*0\b", data)) and not re.search(rb"/Type\s*/Page(?![a-zA-Z])", data)


def _open_pdf(path: Path) -> pdfium.PdfDocument:
    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise DocumentError(f"{path.name}: PDF is encrypted (a password is needed to open it)") from exc
        if exc.err_code == pdfium.raw.FPDF_ERR_SECURITY:
            raise DocumentError(f"{path.name}: PDF uses an unsupported encryption scheme") from exc
        if _looks_pageless(path):
            raise DocumentError(f"{path.name}: document has no pages") from exc
        raise DocumentError(f"{path.name}: corrupt or unreadable PDF") from exc
    encrypted = pdfium.raw.FPDF_GetSecurityHandlerRevision(pdf.raw) != -1
    # Opened with the empty user password, so viewable; honour a ban on printing (PDF 32000-1 Table 22).
    if encrypted and not pdfium.raw.FPDF_GetDocPermissions(pdf.raw) & 0x4:
        pdf.close()
        raise DocumentError(f"{path.name}: PDF is encrypted and does not permit printing")
    pdf.init_forms()  # so that filled-in form fields are drawn, as a printer would
    return pdf


class _PdfSource:
    """Pages of a PDF; the constructor validates (encryption, page count, page sizes) before any render."""

    def __init__(self, path: Path, max_pages: int) -> None:
        self.path = path
        with _PDFIUM_LOCK:
            self.pdf = _open_pdf(path)
            try:
                self.count = len(self.pdf)
                _check_count(path, self.count, max_pages)
                self.sizes: list[tuple[float, float]] = []
                for index in range(self.count):
                    page = self.pdf[index]
                    try:
                        w_pt, h_pt = page.get_size()
                    finally:
                        page.close()
                    where = f"{path.name} page {index + 1}"
                    if min(w_pt, h_pt) < MIN_PDF_SIDE_PT:
                        raise DocumentError(f"{where}: absurd page dimensions {w_pt:g}x{h_pt:g} pt")
                    _check_aspect(where, w_pt, h_pt, f"{w_pt:g}x{h_pt:g} pt")
                    self.sizes.append((w_pt, h_pt))
            except BaseException:
                self.pdf.close()
                raise

    def pages(self, resolution: Resolution, paper: PaperSize) -> Iterator[Image.Image]:
        for index, (w_pt, h_pt) in enumerate(self.sizes):
            size = _fit(w_pt / 72, h_pt / 72, resolution, paper)
            # One isotropic scale fine enough for both axes, then area-average down to the fax grid.
            scale = max(size[0] / w_pt, size[1] / h_pt)
            with _PDFIUM_LOCK:
                page = self.pdf[index]
                try:
                    bitmap = page.render(
                        scale=scale, grayscale=True, fill_color=(255, 255, 255, 255), draw_annots=True
                    )
                    rendered = bitmap.to_pil().convert("L")
                    bitmap.close()
                finally:
                    page.close()
            yield _resample(rendered, size)

    def close(self) -> None:
        with _PDFIUM_LOCK:
            self.pdf.close()


class _ImageSource:
    """Frames of a PNG, JPEG or (multi-page) TIFF; sizes are checked before a frame is decoded."""

    def __init__(self, path: Path, kind: str, max_pages: int) -> None:
        self.path = path
        self.kind = kind
        try:
            self.image = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise DocumentError(
                f"{path.name}: image too large (limit {MAX_SOURCE_PIXELS // 1_000_000} megapixels)"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise self._corrupt(exc) from exc
        try:
            self.count = getattr(self.image, "n_frames", 1)
            _check_count(path, self.count, max_pages)
        except DocumentError:
            self.image.close()
            raise
        except Exception as exc:
            self.image.close()
            raise self._corrupt(exc) from exc

    def _corrupt(self, exc: BaseException) -> DocumentError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DocumentError(f"{self.path.name}: corrupt or unreadable {self.kind.upper()} ({detail})")

    def pages(self, resolution: Resolution, paper: PaperSize) -> Iterator[Image.Image]:
        for index in range(self.count):
            where = self.path.name if self.count == 1 else f"{self.path.name} page {index + 1}"
            try:
                self.image.seek(index)
                frame: Image.Image = self.image
                w, h = frame.size
                if w * h > MAX_SOURCE_PIXELS:
                    raise DocumentError(
                        f"{where}: image too large ({w}x{h} pixels, "
                        f"limit {MAX_SOURCE_PIXELS // 1_000_000} megapixels)"
                    )
                x_dpi, y_dpi = _image_dpi(frame)
                _check_aspect(where, w / x_dpi, h / y_dpi, f"{w}x{h} pixels")
                frame.load()
                if self.kind == "jpeg":
                    frame = ImageOps.exif_transpose(frame)
                    if frame.size != (w, h):
                        x_dpi, y_dpi = y_dpi, x_dpi
                    w, h = frame.size
                gray = _to_gray(frame)
            except DocumentError:
                raise
            except _DECODE_ERRORS as exc:
                raise self._corrupt(exc) from exc
            yield _resample(gray, _fit(w / x_dpi, h / y_dpi, resolution, paper))

    def close(self) -> None:
        self.image.close()


def _image_dpi(frame: Image.Image) -> tuple[float, float]:
    """The frame's resolution if it declares a plausible one, else square pixels (only the ratio matters:
    the content is fitted to the scan line). A fax TIFF at 204x98 must not come out twice as tall."""
    dpi = frame.info.get("dpi")
    try:
        x, y = float(dpi[0]), float(dpi[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return 1.0, 1.0
    if 1.0 <= x <= 10_000.0 and 1.0 <= y <= 10_000.0:
        return x, y
    return 1.0, 1.0


def _check_count(path: Path, count: int, max_pages: int) -> None:
    if count < 1:
        raise DocumentError(f"{path.name}: document has no pages")
    if count > max_pages:
        raise DocumentError(f"{path.name}: {count} pages, more than the limit of {max_pages}")


# --------------------------------------------------------------------------------------------------------
# Output


@contextlib.contextmanager
def _atomic_output(dst: Path) -> Iterator[BinaryIO]:
    """A file object whose content appears at ``dst`` only if the block succeeds (temp file in the same
    directory, fsync, rename, fsync of the directory); on any error no file is left behind."""
    parent = dst.parent
    if not parent.is_dir():
        raise DocumentError(f"{dst}: output directory does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=parent)
    except OSError as exc:
        raise DocumentError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # disk full, permissions, ...
            raise DocumentError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _patch_ifds(data: bytearray, total: int) -> None:
    """Fix two tags in every IFD of a classic TIFF held in memory: PhotometricInterpretation becomes 0
    (min-is-white) and PageNumber becomes (page index, total pages), as TIFF 6.0 §8 and TIFF-F expect.

    Why patching: Pillow writes mode ``1`` as min-is-black and, asked for min-is-white, inverts the page
    pixel by pixel in Python; and its libtiff path garbles PageNumber. So the page is inverted in C before
    encoding and only the tag values are changed here; the Group 4 data is untouched.
    """
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    page = 0
    while offset and page < total and offset + 2 <= len(data):
        (entries,) = struct.unpack_from(order + "H", data, offset)
        for i in range(entries):
            pos = offset + 2 + 12 * i
            tag, typ, count = struct.unpack_from(order + "HHI", data, pos)
            if tag == _TAG_PHOTOMETRIC and typ == 3 and count == 1:  # SHORT, value inside the entry
                struct.pack_into(order + "H", data, pos + 8, 0)
            elif tag == _TAG_PAGE_NUMBER and typ == 3 and count == 2:
                struct.pack_into(order + "HH", data, pos + 8, page, total)
        (offset,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * entries)
        page += 1


def _encode_tiff(pages: Iterator[Image.Image], total: int, resolution: Resolution) -> bytes:
    """Multi-page Group 4 TIFF-F in memory (a 100-page fax is a few megabytes)."""
    buffer = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buffer, new=True) as tiff:
        for number, page in enumerate(pages):
            inverted = ImageChops.invert(page)  # black as 1 bits; tag patched to min-is-white below
            info = TiffImagePlugin.ImageFileDirectory_v2()
            info[_TAG_PAGE_NUMBER] = (number, total)  # written wrongly by Pillow, fixed by _patch_ifds
            info[_TAG_SOFTWARE] = "vfax"
            inverted.save(
                tiff,
                format="TIFF",
                compression="group4",
                dpi=(FAX_X_DPI, resolution.y_dpi),
                tiffinfo=info,
                strip_size=_STRIP_SIZE,
            )
            tiff.newFrame()
    data = bytearray(buffer.getvalue())
    _patch_ifds(data, total)
    return bytes(data)


def prepare_fax_tiff(
    src: Path | str,
    dst: Path | str,
    *,
    resolution: Resolution = Resolution.FINE,
    paper: PaperSize = PaperSize.A4,
    max_pages: int = 100,
) -> PreparedDocument:
    """Convert a PDF, PNG, JPEG or TIFF into a TIFF-F file for spandsp; see the module docstring.

    Raises :class:`DocumentError` for bad input; then nothing is written at ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if max_pages < 1:
        raise DocumentError(f"page limit must be at least 1, not {max_pages}")
    kind = detect_kind(src)
    source: _PdfSource | _ImageSource = (
        _PdfSource(src, max_pages) if kind == "pdf" else _ImageSource(src, kind, max_pages)
    )
    page_h = paper.height_px(resolution)
    heights: list[int] = []
    dithered: list[bool] = []

    def fax_pages() -> Iterator[Image.Image]:
        for gray in source.pages(resolution, paper):
            content, photo = _binarize(gray)
            page = Image.new("1", (FAX_WIDTH_PX, page_h), 255)
            page.paste(content, ((FAX_WIDTH_PX - content.width) // 2, (page_h - content.height) // 2))
            heights.append(page.height)
            dithered.append(photo)
            yield page

    try:
        encoded = _encode_tiff(fax_pages(), source.count, resolution)
    except DocumentError:
        raise
    except (pdfium.PdfiumError, MemoryError, *_DECODE_ERRORS) as exc:
        raise DocumentError(f"{src.name}: cannot convert ({exc})") from exc
    finally:
        source.close()
    with _atomic_output(dst) as out:
        out.write(encoded)
    result = PreparedDocument(dst, len(heights), resolution, paper, tuple(heights), tuple(dithered))
    logger.info(
        "prepared %s: %d page(s), %s, %s, %d bytes",
        dst,
        result.pages,
        resolution.name,
        paper.name,
        len(encoded),
    )
    return result


# --------------------------------------------------------------------------------------------------------
# Received TIFF: pages, PDF, previews


def _open_tiff(path: Path) -> Image.Image:
    if detect_kind(path) != "tiff":
        raise DocumentError(f"{path.name}: not a TIFF file")
    try:
        image = Image.open(path)
        image.load()
        return image
    except _DECODE_ERRORS as exc:
        raise DocumentError(f"{path.name}: corrupt or unreadable TIFF ({exc})") from exc


def _tiff_frames(path: Path) -> Iterator[Image.Image]:
    """Each page of a TIFF, decoded, with its size checked against :data:`MAX_SOURCE_PIXELS` first."""
    image = _open_tiff(path)
    with image:
        try:
            count = image.n_frames
            for index in range(count):
                image.seek(index)
                w, h = image.size
                if w * h > MAX_SOURCE_PIXELS:
                    raise DocumentError(f"{path.name} page {index + 1}: image too large ({w}x{h} pixels)")
                image.load()
                yield image
        except DocumentError:
            raise
        except _DECODE_ERRORS as exc:
            raise DocumentError(f"{path.name}: corrupt or unreadable TIFF ({exc})") from exc


_HALF_LUT = [0 if v < 128 else 255 for v in range(256)]


def read_tiff_pages(path: Path | str) -> list[Image.Image]:
    """All pages of a TIFF as mode ``1`` images (0 = black), e.g. to compare sent and received pixels."""
    pages = []
    for frame in _tiff_frames(Path(path)):
        page = frame.copy() if frame.mode == "1" else _to_gray(frame).point(_HALF_LUT, "1")
        page.info["dpi"] = frame.info.get("dpi")
        pages.append(page)
    return pages


def tiff_to_pdf(src_tiff: Path | str, dst_pdf: Path | str) -> Path:
    """Wrap a received TIFF into a PDF, one page per TIFF page, each page as large as the paper it was faxed
    from (size = pixels / resolution tags). Single-strip Group 4 data is copied unchanged; other codings
    are converted losslessly by img2pdf."""
    src, dst = Path(src_tiff), Path(dst_pdf)
    pages = 0
    for frame in _tiff_frames(src):  # validates every page before img2pdf sees the file
        pages += 1
        if not frame.info.get("dpi"):
            logger.warning("%s page %d has no resolution tags; its PDF page size is a guess", src.name, pages)
    if pages == 0:
        raise DocumentError(f"{src.name}: document has no pages")
    try:
        pdf_bytes = img2pdf.convert(str(src), rotation=img2pdf.Rotation.ifvalid)
    except Exception as exc:  # img2pdf raises plain ValueError/AssertionError/its own errors
        raise DocumentError(f"{src.name}: cannot convert to PDF ({exc})") from exc
    with _atomic_output(dst) as out:
        out.write(pdf_bytes)
    logger.info("wrote %s: %d page(s) from %s", dst, pages, src)
    return dst


def tiff_previews(src_tiff: Path | str, out_dir: Path | str, *, max_width: int = 850) -> list[Path]:
    """One gray PNG per TIFF page, ``<stem>-NNN.png``, at most ``max_width`` pixels wide, its height
    corrected for the fax pixel shape (a standard page is not shown squashed). On error none is kept."""
    src, out = Path(src_tiff), Path(out_dir)
    if max_width < 16:
        raise DocumentError(f"preview width must be at least 16 pixels, not {max_width}")
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for number, frame in enumerate(_tiff_frames(src), start=1):
            x_dpi, y_dpi = _image_dpi(frame)
            width = min(max_width, frame.width)
            height = max(1, round(frame.height * (x_dpi / y_dpi) * width / frame.width))
            preview = _to_gray(frame).resize((width, height), Image.Resampling.BOX)
            dst = out / f"{src.stem}-{number:03d}.png"
            with _atomic_output(dst) as f:
                preview.save(f, format="PNG", optimize=True)
            written.append(dst)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return written


@dataclass(frozen=True)
class PageInfo:
    """One page of a fax TIFF as stored: pixels and the resolution they were scanned at (204 x 98 per
    inch for a standard fax page, so the pixels are twice as tall as they are wide)."""

    width_px: int
    height_px: int
    x_dpi: float
    y_dpi: float

    @property
    def width_mm(self) -> float:
        return self.width_px / self.x_dpi * 25.4

    @property
    def height_mm(self) -> float:
        return self.height_px / self.y_dpi * 25.4

    def shown_height(self, width: int) -> int:
        """Pixel rows of the page drawn ``width`` pixels wide with square pixels (true proportions)."""
        return max(1, round(self.height_px * (self.x_dpi / self.y_dpi) * width / self.width_px))


def _page_info(frame: Image.Image) -> PageInfo:
    x_dpi, y_dpi = _image_dpi(frame)
    return PageInfo(frame.width, frame.height, x_dpi, y_dpi)


def tiff_page_info(path: Path | str) -> list[PageInfo]:
    """Size and resolution of every page of a TIFF, read from its directories without decoding a page.
    Missing or absurd resolution tags count as square pixels."""
    src = Path(path)
    image = _open_tiff_header(src)
    pages = []
    with image:
        try:
            for index in range(image.n_frames):
                image.seek(index)
                w, h = image.size
                if w < 1 or h < 1 or w * h > MAX_SOURCE_PIXELS:
                    raise DocumentError(f"{src.name} page {index + 1}: unusable size {w}x{h} pixels")
                pages.append(_page_info(image))
        except DocumentError:
            raise
        except _DECODE_ERRORS as exc:
            raise DocumentError(f"{src.name}: corrupt or unreadable TIFF ({exc})") from exc
    if not pages:
        raise DocumentError(f"{src.name}: document has no pages")
    return pages


def _open_tiff_header(path: Path) -> Image.Image:
    if detect_kind(path) != "tiff":
        raise DocumentError(f"{path.name}: not a TIFF file")
    try:
        return Image.open(path)
    except _DECODE_ERRORS as exc:
        raise DocumentError(f"{path.name}: corrupt or unreadable TIFF ({exc})") from exc


#: Clockwise quarter turns as Pillow transpositions (Pillow's ROTATE_* turn counter-clockwise).
_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def render_tiff_page(path: Path | str, number: int, *, width: int, rotate: int = 0) -> bytes:
    """Page ``number`` (from 1) of a TIFF as a gray PNG: ``width`` pixels wide when upright, as tall as
    the page's true proportions make it (the fax pixel is not square), then turned ``rotate`` degrees
    clockwise (90 and 270 swap the PNG's width and height). Shrinking averages areas (BOX) so thin
    strokes stay visible as gray; enlarging uses LANCZOS."""
    src = Path(path)
    if rotate not in (0, 90, 180, 270):
        raise ValueError(f"rotate must be 0, 90, 180 or 270, not {rotate}")
    if width < 1:
        raise ValueError(f"width must be positive, not {width}")
    image = _open_tiff_header(src)
    with image:
        try:
            count = image.n_frames
        except _DECODE_ERRORS as exc:
            raise DocumentError(f"{src.name}: corrupt or unreadable TIFF ({exc})") from exc
        if not 1 <= number <= count:
            raise IndexError(f"{count} page(s), no page {number}")
        try:
            image.seek(number - 1)
            w, h = image.size
            if w < 1 or h < 1 or w * h > MAX_SOURCE_PIXELS:
                raise DocumentError(f"{src.name} page {number}: unusable size {w}x{h} pixels")
            info = _page_info(image)
            image.load()
            gray = _to_gray(image)
        except DocumentError:
            raise
        except _DECODE_ERRORS as exc:
            raise DocumentError(f"{src.name}: corrupt or unreadable TIFF ({exc})") from exc
    size = (width, info.shown_height(width))
    method = Image.Resampling.BOX if width <= w else Image.Resampling.LANCZOS
    shown = gray.resize(size, method)
    if rotate:
        shown = shown.transpose(_CLOCKWISE[rotate])
    out = io.BytesIO()
    shown.save(out, format="PNG")
    return out.getvalue()


def sample_document() -> Path:
    """The bundled three-page test document (cover page, table and chart, mixed text and photo)."""
    ref = resources.files("vfax").joinpath("samples/sample.pdf")
    with resources.as_file(ref) as path:
        return Path(path)
