"""TIFF-F test pages made directly with Pillow, for engine tests that must not depend on documents.py."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

FAX_WIDTH = 1728
Y_DPI = {"standard": 98, "fine": 196, "superfine": 391}


def make_fax_tiff(path: Path, pages: int = 3, resolution: str = "fine", rows: int | None = None) -> Path:
    """A multi-page G4 TIFF with distinct content per page (text lines, a frame, a page number)."""
    y_dpi = Y_DPI[resolution]
    height = rows or int(11.69 * y_dpi)  # A4 length
    images = []
    for n in range(pages):
        im = Image.new("1", (FAX_WIDTH, height), 1)
        d = ImageDraw.Draw(im)
        d.rectangle((40, 40, FAX_WIDTH - 40, height - 40), outline=0, width=3)
        for i, y in enumerate(range(80, height - 80, max(20, y_dpi // 5))):
            d.text((80 + (i * 37 + n * 101) % 400, y), f"page {n + 1} line {i} vfax test pattern", fill=0)
        d.rectangle((1400, 100 + n * 60, 1600, 160 + n * 60), fill=0)
        images.append(im)
    images[0].save(path, save_all=True, append_images=images[1:], compression="group4", dpi=(204, y_dpi))
    return path


def tiff_pages(path: Path) -> list[Image.Image]:
    out = []
    with Image.open(path) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            out.append(im.convert("1").copy())
    return out
