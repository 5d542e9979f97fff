"""Test documents, good and bad, written into a directory (usually pytest's ``tmp_path``).

Every function takes ``dest``: a file path, or an existing directory (then a default file name is used),
and returns the path written. PDFs are written by hand (vector text in the base-14 Helvetica, which PDFium
substitutes), images with Pillow, so nothing here depends on the code under test.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

A4_PT = (595.28, 841.89)
LETTER_PT = (612.0, 792.0)
LEGAL_PT = (612.0, 1008.0)
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)
#: Glyphs of the legibility page: letters and digits with thin strokes and close shapes.
LEGIBILITY_ROWS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789")


def _target(dest: Path | str, default: str) -> Path:
    dest = Path(dest)
    return dest / default if dest.is_dir() else dest


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_op(x: float, y: float, size: float, text: str) -> str:
    """A PDF content-stream operation drawing ``text`` in Helvetica with its baseline at (x, y) points."""
    return f"BT /F1 {size:g} Tf {x:.2f} {y:.2f} Td ({_esc(text)}) Tj ET"


def pdf_bytes(
    pages: list[list[str]], size: tuple[float, float] = A4_PT, *, count: int | None = None
) -> bytes:
    """A PDF 1.4 file whose pages have the given content-stream operations (see :func:`text_op`).

    ``count`` overrides the page tree's /Count (to make inconsistent files).
    """
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    pages_id = 2
    objects.append(b"")
    kids = []
    for ops in pages:
        data = zlib.compress("\n".join(ops).encode("latin-1"))
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream")
        content_id = len(objects)
        objects.append(
            f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {size[0]:g} {size[1]:g}] "
            f"/Resources << /Font << /F1 1 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        kids.append(len(objects))
    n = len(kids) if count is None else count
    objects[pages_id - 1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {n} >>".encode()
    )
    objects.append(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())
    catalog = len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def text_pdf(
    dest: Path | str, pages: int = 1, size: tuple[float, float] = A4_PT, font_size: float = 11
) -> Path:
    """A text document of ``pages`` pages, each with a heading naming its number and a few lines."""
    path = _target(dest, f"text-{pages}p.pdf")
    content = []
    for n in range(1, pages + 1):
        ops = [text_op(60, size[1] - 80, 24, f"Page {n} of {pages}")]
        for i in range(12):
            ops.append(
                text_op(60, size[1] - 130 - i * 1.6 * font_size, font_size, f"Line {i + 1}: vfax test text.")
            )
        ops.append(f"2 w 40 40 {size[0] - 80:.2f} {size[1] - 80:.2f} re S")
        content.append(ops)
    path.write_bytes(pdf_bytes(content, size))
    return path


def legibility_pdf(dest: Path | str, font_size: float = 8) -> Path:
    """One A4 page with :data:`LEGIBILITY_ROWS` at ``font_size`` points, one glyph every 16 pt so that
    glyphs never touch, rows 60 pt apart from y = 700 pt down; below them a 0.5 pt horizontal rule from
    x = 60 to 540 pt at y = 480 pt and a 0.5 pt vertical rule at x = 300 pt from y = 300 to 440 pt."""
    path = _target(dest, f"legibility-{font_size:g}pt.pdf")
    ops = []
    for r, row in enumerate(LEGIBILITY_ROWS):
        for i, glyph in enumerate(row):
            ops.append(text_op(60 + 16 * i, 700 - 60 * r, font_size, glyph))
    ops.append("0.5 w 60 480 m 540 480 l S")
    ops.append("0.5 w 300 300 m 300 440 l S")
    path.write_bytes(pdf_bytes([ops]))
    return path


def zero_page_pdf(dest: Path | str) -> Path:
    """A well-formed PDF whose page tree is empty."""
    path = _target(dest, "zero-pages.pdf")
    path.write_bytes(pdf_bytes([]))
    return path


def corrupt_pdf(dest: Path | str) -> Path:
    """A PDF header followed by garbage: no objects, no cross-reference table."""
    path = _target(dest, "corrupt.pdf")
    rng = random.Random(7)
    path.write_bytes(b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(4000)))
    return path


def truncated_pdf(dest: Path | str) -> Path:
    """A valid PDF cut off before its page objects and cross-reference table."""
    path = _target(dest, "truncated.pdf")
    data = pdf_bytes([[text_op(60, 700, 12, "truncated")]])
    path.write_bytes(data[: data.index(b"3 0 obj")])
    return path


def absurd_page_pdf(dest: Path | str) -> Path:
    """A PDF whose only page is 14400 pt long and 10 pt wide (a 1440:1 strip)."""
    path = _target(dest, "absurd-page.pdf")
    path.write_bytes(pdf_bytes([[text_op(1, 100, 8, "x")]], size=(10, 14400)))
    return path


def encrypted_pdf(dest: Path | str, user_password: str = "secret", *, allow_print: bool = True) -> Path:
    """A text PDF encrypted with AES-256 (pikepdf, which img2pdf depends on). With ``user_password=""``
    it opens without a password; ``allow_print=False`` then forbids printing."""
    import pikepdf  # img2pdf requires it, so it is always installed alongside

    path = _target(dest, "encrypted.pdf")
    plain = pdf_bytes([[text_op(60, 700, 12, "secret text")]])
    with pikepdf.open(io.BytesIO(plain)) as pdf:
        permissions = pikepdf.Permissions(print_lowres=allow_print, print_highres=allow_print)
        pdf.save(path, encryption=pikepdf.Encryption(user=user_password, owner="owner", allow=permissions))
    return path


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def text_image(size: tuple[int, int] = (1275, 1650), mode: str = "RGB") -> Image.Image:
    """A letter-sized page at 150 dpi with a frame, a title and text lines, in ``mode``."""
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    w, h = size
    draw.rectangle((20, 20, w - 21, h - 21), outline="black", width=4)
    draw.text((60, 60), "vfax test image", fill="black", font=_font(max(12, h // 25)))
    body = _font(max(8, h // 60))
    for i in range(10):
        draw.text(
            (60, h // 6 + i * h // 30),
            f"Line {i + 1}: The quick brown fox 0123456789",
            fill="navy",
            font=body,
        )
    draw.rectangle((w // 2, h // 2, w // 2 + w // 5, h // 2 + h // 10), fill="darkred")
    return im.convert(mode) if mode != "RGB" else im


def png(
    dest: Path | str, size: tuple[int, int] = (1275, 1650), mode: str = "RGB", dpi: float | None = None
) -> Path:
    """A text page as PNG (``mode`` may be RGB, RGBA, L, P, 1 or I;16)."""
    path = _target(dest, f"page-{mode.replace(';', '')}.png")
    im = text_image(size)
    if mode == "RGBA":
        # Transparent background, opaque ink: on white paper it must read as black text, not a black page.
        black = Image.new("RGBA", size, (0, 0, 0, 0))
        black.putalpha(im.convert("L").point(lambda v: 255 if v < 250 else 0))
        im = black
    elif mode == "I;16":
        im = im.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
    elif mode != "RGB":
        im = im.convert(mode)
    kwargs = {"dpi": (dpi, dpi)} if dpi else {}
    im.save(path, format="PNG", **kwargs)
    return path


def photo_image(size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A synthetic photograph: smooth gradients and shapes, nearly all mid-tones."""
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    for i in range(6):
        r = (i + 2) * min(w, h) // 20
        shade = 60 + i * 25
        draw.ellipse(
            (w // 2 - r + i * 30, h // 2 - r, w // 2 + r + i * 30, h // 2 + r), fill=(shade, shade + 20, 120)
        )
    return im


def jpeg(dest: Path | str, size: tuple[int, int] = (1200, 900), *, orientation: int | None = None) -> Path:
    """A photograph as JPEG; ``orientation`` sets the EXIF Orientation tag (6: rotate 90° to display)."""
    path = _target(dest, "photo.jpg")
    im = photo_image(size)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(path, format="JPEG", quality=85, exif=exif)
    return path


def tiff(
    dest: Path | str,
    pages: int = 1,
    *,
    mode: str = "1",
    size: tuple[int, int] = (1275, 1650),
    dpi: tuple[float, float] = (150, 150),
    compression: str | None = None,
) -> Path:
    """A (multi-page) TIFF of text pages in ``mode`` (``1``, ``L``, ``RGB``, ...); page n has n squares."""
    path = _target(dest, f"doc-{pages}p-{mode}.tif")
    images = []
    for n in range(pages):
        im = text_image(size)
        draw = ImageDraw.Draw(im)
        for k in range(n + 1):
            draw.rectangle((60 + k * 80, size[1] - 200, 120 + k * 80, size[1] - 140), fill="black")
        images.append(im.convert(mode))
    if compression is None:
        compression = "group4" if mode == "1" else "tiff_lzw"
    images[0].save(
        path, format="TIFF", save_all=True, append_images=images[1:], compression=compression, dpi=dpi
    )
    return path


def fax_tiff(
    dest: Path | str, y_dpi: int = 98, pages: int = 1, *, squares: bool = True, height_in: float = 11.69
) -> Path:
    """A TIFF-F-like page: 1728 wide at 204 dpi, ``y_dpi`` lines per inch, A4 long, a black 1 x 1 inch
    square at 1 inch from the top-left corner (204 x ``y_dpi`` pixels) and a text line."""
    path = _target(dest, f"fax-{y_dpi}-{pages}p.tif")
    height = round(height_in * y_dpi)
    images = []
    for n in range(pages):
        im = Image.new("L", (1728, height), 255)
        draw = ImageDraw.Draw(im)
        if squares:
            draw.rectangle((204, y_dpi, 204 + 203, y_dpi + y_dpi - 1), fill=0)
        draw.text((600, y_dpi), f"fax page {n + 1}", fill=0, font=_font(30))
        images.append(im.point(lambda v: 255 if v >= 128 else 0).convert("1"))
    images[0].save(
        path, format="TIFF", save_all=True, append_images=images[1:], compression="group4", dpi=(204, y_dpi)
    )
    return path


def strip_png(dest: Path | str, size: tuple[int, int] = (1, 100000)) -> Path:
    """A real PNG with an absurd aspect ratio (1 x 100000 pixels by default)."""
    path = _target(dest, "strip.png")
    Image.new("L", size, 0).save(path, format="PNG")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(dest: Path | str, size: tuple[int, int] = (60000, 60000)) -> Path:
    """A small PNG whose header claims ``size`` (3.6 gigapixels by default): a decompression bomb."""
    path = _target(dest, "bomb.png")
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 0, 0, 0, 0)  # 8-bit gray
    idat = zlib.compress(b"\x00" * 4096)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


def corrupt_tiff(dest: Path | str) -> Path:
    """A TIFF header whose first IFD points into garbage."""
    path = _target(dest, "corrupt.tif")
    rng = random.Random(11)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + bytes(rng.randrange(256) for _ in range(600)))
    return path


def truncated_tiff(dest: Path | str) -> Path:
    """A 3-page Group 4 TIFF cut in the middle of its second page's data."""
    path = _target(dest, "truncated.tif")
    images = [text_image().convert("1") for _ in range(3)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="TIFF", save_all=True, append_images=images[1:], compression="group4")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file(dest: Path | str) -> Path:
    path = _target(dest, "notes.txt")
    path.write_text("This is a plain text file, not a document.\n" * 20)
    return path


def random_bytes(dest: Path | str, size: int = 5000) -> Path:
    path = _target(dest, "random.bin")
    rng = random.Random(3)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
    return path


def empty_file(dest: Path | str) -> Path:
    path = _target(dest, "empty.pdf")
    path.write_bytes(b"")
    return path


def ink_coverage(gray: Image.Image) -> float:
    """Mean darkness of a gray image, 0 (white) .. 1 (black)."""
    hist = gray.convert("L").histogram()
    total = sum(hist)
    return sum((255 - v) * n for v, n in enumerate(hist)) / (255 * total) if total else 0.0


__all__ = [
    "A4_PT",
    "LEGAL_PT",
    "LEGIBILITY_ROWS",
    "LETTER_PT",
    "absurd_page_pdf",
    "bomb_png",
    "corrupt_pdf",
    "corrupt_tiff",
    "empty_file",
    "encrypted_pdf",
    "fax_tiff",
    "ink_coverage",
    "jpeg",
    "legibility_pdf",
    "pdf_bytes",
    "photo_image",
    "png",
    "random_bytes",
    "strip_png",
    "text_file",
    "text_image",
    "text_op",
    "text_pdf",
    "tiff",
    "truncated_pdf",
    "truncated_tiff",
    "zero_page_pdf",
]
