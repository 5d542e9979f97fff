"""Documents: PDF/PNG/JPEG/TIFF in, TIFF-F for spandsp out; received TIFF to PDF and previews."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, TiffImagePlugin

from tests import docfactory as F
from vfax.documents import (
    FAX_WIDTH_PX,
    DocumentError,
    PaperSize,
    PreparedDocument,
    Resolution,
    detect_kind,
    prepare_fax_tiff,
    read_tiff_pages,
    sample_document,
    tiff_previews,
    tiff_to_pdf,
)

# Page lengths in scan lines, worked out by hand: paper length in inches x lines per inch, rounded.
EXPECTED_HEIGHTS = {
    (PaperSize.A4, Resolution.STANDARD): 1146,  # 297 mm = 11.693 in
    (PaperSize.A4, Resolution.FINE): 2292,
    (PaperSize.A4, Resolution.SUPERFINE): 4572,
    (PaperSize.LETTER, Resolution.STANDARD): 1078,  # 11 in
    (PaperSize.LETTER, Resolution.FINE): 2156,
    (PaperSize.LETTER, Resolution.SUPERFINE): 4301,
    (PaperSize.LEGAL, Resolution.STANDARD): 1372,  # 14 in
    (PaperSize.LEGAL, Resolution.FINE): 2744,
    (PaperSize.LEGAL, Resolution.SUPERFINE): 5474,
}


def tiff_directories(path: Path) -> list[dict[int, object]]:
    """The tags of every page of a TIFF, as Pillow reads them (raw values, no interpretation)."""
    with Image.open(path) as im:
        pages = []
        for index in range(im.n_frames):
            im.seek(index)
            pages.append(dict(im.tag_v2))
        return pages


def leftovers(directory: Path, expected: set[str]) -> set[str]:
    """Files in ``directory`` other than ``expected`` (temporary files, partial outputs)."""
    return set(os.listdir(directory)) - expected


def black_bbox(page: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of the black pixels of a mode ``1`` page."""
    return ImageChops.invert(page.convert("L")).getbbox()


# --------------------------------------------------------------------------------------------------------
# Output format: what spandsp's t4_tx reads


def test_sample_prepares_to_tiff_f_profile(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    doc = prepare_fax_tiff(sample_document(), dst)
    assert doc == PreparedDocument(dst, 3, Resolution.FINE, PaperSize.A4, (2292, 2292, 2292), doc.dithered)
    dirs = tiff_directories(dst)
    assert len(dirs) == 3
    for number, tags in enumerate(dirs):
        assert tags[256] == FAX_WIDTH_PX  # ImageWidth
        assert tags[257] == 2292  # ImageLength
        assert tags[258] in (1, (1,))  # BitsPerSample
        assert tags.get(277, 1) == 1  # SamplesPerPixel
        assert tags[259] == 4  # Compression: CCITT T.6 (Group 4)
        assert tags[262] == 0  # PhotometricInterpretation: min-is-white
        assert float(tags[282]) == 204.0 and float(tags[283]) == 196.0  # X/YResolution
        assert tags[296] == 2  # ResolutionUnit: inch
        assert tags[297] == (number, 3)  # PageNumber
        assert len(tags[273]) == 1  # a single strip per page


@pytest.mark.parametrize("paper", list(PaperSize))
@pytest.mark.parametrize("resolution", list(Resolution))
def test_page_is_1728_wide_and_as_long_as_the_paper(
    tmp_path: Path, resolution: Resolution, paper: PaperSize
) -> None:
    src = F.text_pdf(tmp_path, pages=2, size=F.LETTER_PT)
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=resolution, paper=paper)
    height = EXPECTED_HEIGHTS[paper, resolution]
    assert doc.pages == 2 and doc.page_heights == (height, height)
    pages = read_tiff_pages(doc.path)
    assert [p.size for p in pages] == [(FAX_WIDTH_PX, height)] * 2
    assert all(p.mode == "1" for p in pages)
    for tags in tiff_directories(doc.path):
        assert (float(tags[282]), float(tags[283]), tags[296]) == (204.0, float(resolution.y_dpi), 2)


def test_resolution_and_paper_names_parse_for_the_cli() -> None:
    assert Resolution.from_name("Superfine") is Resolution.SUPERFINE
    assert (Resolution.STANDARD.x_dpi, Resolution.STANDARD.y_dpi) == (204, 98)
    assert PaperSize.from_name(" letter ") is PaperSize.LETTER
    with pytest.raises(DocumentError, match="unknown resolution"):
        Resolution.from_name("ultra")
    with pytest.raises(DocumentError, match="unknown paper size"):
        PaperSize.from_name("A3")


# spandsp 0.0.6 itself, through cffi: it must read our resolution tags as R8 x standard/fine/superfine
# (T4_X_RESOLUTION_R8 = 8031 pels/m; T4_Y_RESOLUTION_* = 3850/7700/15400 lines/m) and decode our pixels.

_SPANDSP_CDEF = """
typedef struct t4_tx_state_s t4_tx_state_t;
typedef struct t4_rx_state_s t4_rx_state_t;
t4_tx_state_t *t4_tx_init(t4_tx_state_t *s, const char *file, int start_page, int stop_page);
int t4_tx_start_page(t4_tx_state_t *s);
int t4_tx_end_page(t4_tx_state_t *s);
int t4_tx_get_x_resolution(t4_tx_state_t *s);
int t4_tx_get_y_resolution(t4_tx_state_t *s);
int t4_tx_get_image_width(t4_tx_state_t *s);
int t4_tx_get_pages_in_file(t4_tx_state_t *s);
int t4_tx_get_chunk(t4_tx_state_t *s, uint8_t buf[], int max_len);
void t4_tx_set_tx_encoding(t4_tx_state_t *s, int encoding);
int t4_tx_free(t4_tx_state_t *s);
t4_rx_state_t *t4_rx_init(t4_rx_state_t *s, const char *file, int output_encoding);
int t4_rx_start_page(t4_rx_state_t *s);
int t4_rx_put_chunk(t4_rx_state_t *s, const uint8_t buf[], int len);
int t4_rx_end_page(t4_rx_state_t *s);
void t4_rx_set_rx_encoding(t4_rx_state_t *s, int encoding);
void t4_rx_set_image_width(t4_rx_state_t *s, int width);
void t4_rx_set_x_resolution(t4_rx_state_t *s, int resolution);
void t4_rx_set_y_resolution(t4_rx_state_t *s, int resolution);
int t4_rx_free(t4_rx_state_t *s);
"""
T4_COMPRESSION_ITU_T4_1D = 1
T4_COMPRESSION_ITU_T6 = 3


@pytest.fixture(scope="module")
def spandsp():  # type: ignore[no-untyped-def]
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(_SPANDSP_CDEF)
    try:
        lib = ffi.dlopen("libspandsp.so.2")
    except OSError:
        pytest.skip("libspandsp.so.2 not installed")
    return ffi, lib


def spandsp_relay(spandsp, src: Path, dst: Path, encoding: int) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """Encode ``src`` with spandsp's t4_tx and decode the T.4/T.6 stream with t4_rx into ``dst`` (what the
    far end of a fax writes); return (x resolution, y resolution, width) per page as t4_tx saw them."""
    ffi, lib = spandsp
    tx = lib.t4_tx_init(ffi.NULL, str(src).encode(), -1, -1)
    assert tx != ffi.NULL, "spandsp could not open the TIFF"
    rx = lib.t4_rx_init(ffi.NULL, str(dst).encode(), encoding)
    lib.t4_tx_set_tx_encoding(tx, encoding)
    lib.t4_rx_set_rx_encoding(rx, encoding)
    seen = []
    buf = ffi.new("uint8_t[]", 65536)
    try:
        for _ in range(lib.t4_tx_get_pages_in_file(tx)):
            assert lib.t4_tx_start_page(tx) == 0
            page = (
                lib.t4_tx_get_x_resolution(tx),
                lib.t4_tx_get_y_resolution(tx),
                lib.t4_tx_get_image_width(tx),
            )
            seen.append(page)
            lib.t4_rx_set_x_resolution(rx, page[0])
            lib.t4_rx_set_y_resolution(rx, page[1])
            lib.t4_rx_set_image_width(rx, page[2])
            lib.t4_rx_start_page(rx)
            while (n := lib.t4_tx_get_chunk(tx, buf, len(buf))) > 0:
                lib.t4_rx_put_chunk(rx, buf, n)
                if n < len(buf):
                    break
            lib.t4_tx_end_page(tx)
            lib.t4_rx_end_page(rx)
    finally:
        lib.t4_tx_free(tx)
        lib.t4_rx_free(rx)
    return seen


@pytest.mark.parametrize(
    ("resolution", "y_code"),
    [(Resolution.STANDARD, 3850), (Resolution.FINE, 7700), (Resolution.SUPERFINE, 15400)],
)
def test_spandsp_reads_our_resolution_tags_as_the_t4_resolution(
    spandsp, tmp_path: Path, resolution: Resolution, y_code: int
) -> None:  # type: ignore[no-untyped-def]
    doc = prepare_fax_tiff(F.text_pdf(tmp_path, pages=2), tmp_path / "out.tif", resolution=resolution)
    seen = spandsp_relay(spandsp, doc.path, tmp_path / "rx.tif", T4_COMPRESSION_ITU_T6)
    assert seen == [(8031, y_code, 1728)] * 2


@pytest.mark.parametrize("encoding", [T4_COMPRESSION_ITU_T6, T4_COMPRESSION_ITU_T4_1D])
def test_spandsp_sends_exactly_our_pixels(spandsp, tmp_path: Path, encoding: int) -> None:  # type: ignore[no-untyped-def]
    doc = prepare_fax_tiff(sample_document(), tmp_path / "out.tif", resolution=Resolution.STANDARD)
    spandsp_relay(spandsp, doc.path, tmp_path / "rx.tif", encoding)
    sent, received = read_tiff_pages(doc.path), read_tiff_pages(tmp_path / "rx.tif")
    assert len(received) == 3
    for a, b in zip(sent, received, strict=True):
        assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None
        assert black_bbox(a) is not None  # not a blank page compared with a blank page


# --------------------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize(
    ("maker", "kind"),
    [
        (lambda d: F.text_pdf(d / "looks-like.png"), "pdf"),
        (lambda d: F.png(d / "looks-like.pdf"), "png"),
        (lambda d: F.jpeg(d / "looks-like.tif"), "jpeg"),
        (lambda d: F.tiff(d / "looks-like.jpg"), "tiff"),
    ],
)
def test_kind_is_detected_from_content_not_name(tmp_path: Path, maker, kind: str) -> None:  # type: ignore[no-untyped-def]
    assert detect_kind(maker(tmp_path)) == kind


def test_pdf_with_junk_before_header_is_still_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "junk.pdf"
    path.write_bytes(b"\r\n\r\n" + F.pdf_bytes([[F.text_op(60, 700, 12, "hello")]]))
    assert detect_kind(path) == "pdf"
    assert prepare_fax_tiff(path, tmp_path / "out.tif").pages == 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16"])
def test_png_of_any_mode_becomes_one_page_with_its_text(tmp_path: Path, mode: str) -> None:
    doc = prepare_fax_tiff(F.png(tmp_path, mode=mode), tmp_path / "out.tif")
    (page,) = read_tiff_pages(doc.path)
    assert page.size == (1728, 2292)
    black = page.convert("L").histogram()[0] / (page.width * page.height)
    # A text page: some ink (frame, text, the red box) but nowhere near a black page.
    assert 0.01 < black < 0.25, f"black fraction {black:.3f} for mode {mode}"


def test_jpeg_photo_is_dithered_and_keeps_its_tones(tmp_path: Path) -> None:
    src = F.jpeg(tmp_path)
    doc = prepare_fax_tiff(src, tmp_path / "out.tif")
    assert doc.dithered == (True,)
    (page,) = read_tiff_pages(doc.path)
    box = black_bbox(page)
    assert box is not None
    # Dithering keeps the mean darkness of the photo (a plain threshold would not).
    with Image.open(src) as im:
        expected = F.ink_coverage(im)
    got = F.ink_coverage(page.crop(box))
    assert abs(got - expected) < 0.08, (got, expected)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 1200x600 (landscape) with Orientation 6: displayed (and faxed) as a 600x1200 portrait.
    doc = prepare_fax_tiff(F.jpeg(tmp_path, size=(1200, 600), orientation=6), tmp_path / "out.tif")
    (page,) = read_tiff_pages(doc.path)
    left, top, right, bottom = black_bbox(page)  # type: ignore[misc]
    width_in, height_in = (right - left) / 204, (bottom - top) / 196
    assert height_in > 1.5 * width_in


def test_text_page_is_thresholded_not_dithered(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(sample_document(), tmp_path / "out.tif", resolution=Resolution.STANDARD)
    assert doc.dithered[0] is False  # the cover page: text and rules only
    assert doc.dithered[2] is True  # the page with a photograph


def test_multipage_tiff_gives_one_fax_page_per_tiff_page(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(F.tiff(tmp_path, pages=4), tmp_path / "out.tif", resolution=Resolution.STANDARD)
    assert doc.pages == 4
    pages = read_tiff_pages(doc.path)
    assert len(pages) == 4
    # Page n carries n black squares: the pages are distinct and in order.
    inks = [page.convert("L").histogram()[0] for page in pages]
    assert inks == sorted(inks) and len(set(inks)) == 4


def test_color_tiff_is_converted(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(F.tiff(tmp_path, pages=2, mode="RGB"), tmp_path / "out.tif")
    pages = read_tiff_pages(doc.path)
    assert [p.size for p in pages] == [(1728, 2292)] * 2
    assert all(0.01 < p.convert("L").histogram()[0] / (p.width * p.height) < 0.25 for p in pages)


def test_fax_tiff_at_the_same_resolution_passes_through_pixel_for_pixel(tmp_path: Path) -> None:
    src = F.fax_tiff(tmp_path, y_dpi=98, pages=2)
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=Resolution.STANDARD)
    for a, b in zip(read_tiff_pages(src), read_tiff_pages(doc.path), strict=True):
        assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def test_fine_fax_tiff_sent_at_standard_keeps_its_proportions(tmp_path: Path) -> None:
    # A 1 x 1 inch square at fine (204 x 196 pixels) must come out 204 x 98 pixels at standard, not stretched.
    src = F.fax_tiff(tmp_path, y_dpi=196)
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=Resolution.STANDARD)
    (page,) = read_tiff_pages(doc.path)
    square = ImageChops.invert(page.crop((0, 0, 500, 300)).convert("L")).getbbox()
    assert square is not None
    left, top, right, bottom = square
    assert abs((right - left) - 204) <= 2 and abs((bottom - top) - 98) <= 2


def test_wide_image_fills_the_scan_line_and_is_centred_vertically(tmp_path: Path) -> None:
    src = tmp_path / "wide.png"
    Image.new("L", (1000, 500), 0).save(src)  # all black, 2:1, no resolution: square pixels
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=Resolution.FINE)
    (page,) = read_tiff_pages(doc.path)
    left, top, right, bottom = black_bbox(page)  # type: ignore[misc]
    assert (left, right) == (0, 1728)
    height = round(1728 / 2 * 196 / 204)  # half the physical width, in fine lines
    assert abs((bottom - top) - height) <= 1
    assert abs(top - (2292 - (bottom - top)) // 2) <= 1


def test_long_image_is_shrunk_to_the_paper_length_and_centred(tmp_path: Path) -> None:
    src = tmp_path / "long.png"
    Image.new("L", (400, 2000), 0).save(src)  # 1:5, longer than any paper once the width is filled
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=Resolution.FINE, paper=PaperSize.LETTER)
    (page,) = read_tiff_pages(doc.path)
    left, top, right, bottom = black_bbox(page)  # type: ignore[misc]
    assert (top, bottom) == (0, 2156)
    width = round(11 / 5 * 204)  # 2.2 inches at 204 per inch
    assert abs((right - left) - width) <= 1
    assert abs(left - (1728 - width) // 2) <= 1


def test_letter_pdf_on_letter_paper_fills_the_page(tmp_path: Path) -> None:
    src = F.text_pdf(tmp_path, size=F.LETTER_PT)  # its frame is 40 pt from each edge
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=Resolution.FINE, paper=PaperSize.LETTER)
    (page,) = read_tiff_pages(doc.path)
    left, top, right, _ = black_bbox(page)  # type: ignore[misc]
    scale = 1728 / 612  # 8.5 in page on the 8.47 in scan line: pixels per point across
    assert abs(left - 40 * scale) <= 3 and abs(right - (612 - 40) * scale) <= 3
    assert abs(top - 40 * scale * 196 / 204) <= 3


def test_rotated_pdf_page_is_laid_out_as_displayed(tmp_path: Path) -> None:
    src = F.text_pdf(tmp_path / "upright.pdf")
    with pikepdf.open(src) as pdf:
        pdf.pages[0].Rotate = 90
        pdf.save(tmp_path / "rotated.pdf")
    doc = prepare_fax_tiff(tmp_path / "rotated.pdf", tmp_path / "out.tif", resolution=Resolution.FINE)
    (page,) = read_tiff_pages(doc.path)
    left, top, right, bottom = black_bbox(page)  # type: ignore[misc]
    width_in, height_in = (right - left) / 204, (bottom - top) / 196  # the frame, 40 pt inside the edges
    assert abs(width_in / height_in - (841.89 - 80) / (595.28 - 80)) < 0.03


def test_concurrent_conversions_give_the_same_result_as_one_at_a_time(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    serial = prepare_fax_tiff(sample_document(), tmp_path / "serial.tif", resolution=Resolution.STANDARD)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(
                prepare_fax_tiff, sample_document(), tmp_path / f"t{i}.tif", resolution=Resolution.STANDARD
            )
            for i in range(3)
        ]
        results = [f.result() for f in futures]
    for result in results:
        assert result.path.read_bytes() == serial.path.read_bytes()


# --------------------------------------------------------------------------------------------------------
# Legibility of 8-point text


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("resolution", [Resolution.STANDARD, Resolution.FINE])
def test_8_point_text_keeps_every_glyph_and_its_strokes(tmp_path: Path, resolution: Resolution) -> None:
    src = F.legibility_pdf(tmp_path, font_size=8)
    doc = prepare_fax_tiff(src, tmp_path / "out.tif", resolution=resolution)
    assert doc.dithered == (False,)
    (page,) = read_tiff_pages(doc.path)
    gray = page.convert("L")
    y_scale = resolution.y_dpi / 72  # A4 on A4: the page fits by its length, scale 1
    x_scale, x_off = 204 / 72, (1728 - round(595.28 / 72 * 204)) // 2

    with pdfium.PdfDocument(str(src)) as pdf:  # reference: the same page at 600 dpi, gray
        reference = pdf[0].render(scale=600 / 72, grayscale=True).to_pil().convert("L")

    for r, row in enumerate(F.LEGIBILITY_ROWS):
        baseline = 700 - 60 * r
        top, bottom = round((841.89 - baseline - 10) * y_scale), round((841.89 - baseline + 4) * y_scale)
        band = gray.crop((0, top, 1728, bottom))
        columns = [band.crop((x, 0, x + 1, band.height)).getextrema()[0] == 0 for x in range(1728)]
        glyphs = _runs(columns)
        assert len(glyphs) == len(row), f"row {row!r}: {len(glyphs)} glyphs found at {resolution.name}"
        for (x0, x1), char in zip(glyphs, row, strict=True):
            ink = band.crop((x0, 0, x1, band.height))
            black = ink.histogram()[0]
            box = ImageChops.invert(ink).getbbox()
            assert box is not None
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert black >= 6, f"glyph {char!r} nearly wiped out ({black} pixels)"
            if char in "OD0":  # big counters stay open: the middle of the glyph is white
                middle = ink.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))
                assert middle == 255, f"glyph {char!r} filled in ({black}/{area} black)"
            assert x0 >= x_off + (60 + 16 * row.index(char)) * x_scale - 4  # in its own cell, in order
        # Thresholding keeps about as much ink as the glyphs have (not wiped out, not smeared).
        ref_band = reference.crop(
            (
                0,
                round((841.89 - baseline - 10) * 600 / 72),
                reference.width,
                round((841.89 - baseline + 4) * 600 / 72),
            )
        )
        ratio = (band.histogram()[0] / (band.width * band.height)) / F.ink_coverage(ref_band)
        # (measured: 1.1-1.4 at the threshold in use; 0.6-0.7 when a threshold of 80 eats strokes, 1.6-1.9
        # when one of 230+ smears them)
        assert 0.8 < ratio < 1.5, f"ink ratio {ratio:.2f} in row {r} at {resolution.name}"

    # 0.5 pt rules survive unbroken: horizontal at y = 480 pt from x = 60..540, vertical at x = 300 pt.
    y = round((841.89 - 480) * y_scale)
    rule = gray.crop((round(x_off + 70 * x_scale), y - 3, round(x_off + 530 * x_scale), y + 4))
    assert all(rule.crop((x, 0, x + 1, rule.height)).getextrema()[0] == 0 for x in range(rule.width))
    x = round(x_off + 300 * x_scale)
    rule = gray.crop((x - 3, round((841.89 - 430) * y_scale), x + 4, round((841.89 - 310) * y_scale)))
    assert all(rule.crop((0, y, rule.width, y + 1)).getextrema()[0] == 0 for y in range(rule.height))


# --------------------------------------------------------------------------------------------------------
# Bad input: a clear error, nothing written


BAD_INPUTS = {
    "text file": (F.text_file, "not a document"),
    "random bytes": (F.random_bytes, "not a document"),
    "empty file": (F.empty_file, "empty file"),
    "encrypted pdf": (F.encrypted_pdf, "encrypted"),
    "print-forbidden pdf": (lambda d: F.encrypted_pdf(d, "", allow_print=False), "does not permit printing"),
    "corrupt pdf": (F.corrupt_pdf, "corrupt"),
    "truncated pdf": (F.truncated_pdf, "corrupt"),
    "zero-page pdf": (F.zero_page_pdf, "no pages"),
    "absurd pdf page": (F.absurd_page_pdf, "absurd page dimensions"),
    "1x100000 png": (F.strip_png, "absurd page dimensions"),
    "60000x60000 png bomb": (F.bomb_png, "too large"),
    "11000x11000 png": (lambda d: F.bomb_png(d, (11000, 11000)), "too large"),
    "corrupt tiff": (F.corrupt_tiff, "corrupt"),
    "truncated tiff": (F.truncated_tiff, "corrupt"),
    "missing file": (lambda d: d / "nowhere.pdf", "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_clear_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    maker, reason = BAD_INPUTS[case]
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = maker(src_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "fax.tif"
    with pytest.raises(DocumentError, match=reason) as info:
        prepare_fax_tiff(src, dst)
    message = str(info.value)
    assert "\n" not in message and src.name in message
    assert os.listdir(out_dir) == []  # no output, no temporary file


def test_too_many_pages_is_refused_before_rendering(tmp_path: Path) -> None:
    src = F.text_pdf(tmp_path, pages=5)
    with pytest.raises(DocumentError, match="5 pages, more than the limit of 4"):
        prepare_fax_tiff(src, tmp_path / "out.tif", max_pages=4)
    assert leftovers(tmp_path, {src.name}) == set()
    assert prepare_fax_tiff(src, tmp_path / "out.tif", max_pages=5).pages == 5


def test_page_limit_applies_to_multipage_tiff(tmp_path: Path) -> None:
    src = F.tiff(tmp_path, pages=3)
    with pytest.raises(DocumentError, match="3 pages"):
        prepare_fax_tiff(src, tmp_path / "out.tif", max_pages=2)


def test_pdf_encrypted_with_empty_user_password_and_printing_allowed_is_sent(tmp_path: Path) -> None:
    src = F.encrypted_pdf(tmp_path, "")
    assert prepare_fax_tiff(src, tmp_path / "out.tif").pages == 1


def test_failed_conversion_leaves_an_existing_destination_untouched(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"previous fax")
    with pytest.raises(DocumentError):
        prepare_fax_tiff(F.corrupt_pdf(tmp_path), dst)
    assert dst.read_bytes() == b"previous fax"


def test_failure_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = F.text_pdf(tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(DocumentError, match="No space left on device"):
        prepare_fax_tiff(src, out / "fax.tif")
    assert os.listdir(out) == []


def test_missing_output_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="output directory does not exist"):
        prepare_fax_tiff(F.text_pdf(tmp_path), tmp_path / "no" / "such" / "out.tif")


def test_successful_output_replaces_destination_atomically(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"old")
    prepare_fax_tiff(F.text_pdf(tmp_path), dst)
    assert detect_kind(dst) == "tiff" and len(read_tiff_pages(dst)) == 1
    assert leftovers(tmp_path, {"out.tif", "text-1p.pdf"}) == set()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    magic=st.sampled_from([b"%PDF-1.4\n", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*"]),
    body=st.binary(max_size=400),
)
def test_garbage_behind_a_valid_magic_never_escapes_as_another_error(
    tmp_path: Path, magic: bytes, body: bytes
) -> None:
    src = tmp_path / "fuzz.bin"
    src.write_bytes(magic + body)
    dst = tmp_path / "fuzz.tif"
    try:
        prepare_fax_tiff(src, dst)
    except DocumentError:
        assert not dst.exists()
    else:
        assert len(read_tiff_pages(dst)) >= 1
        dst.unlink()


# --------------------------------------------------------------------------------------------------------
# Received TIFF: PDF and previews


def _pdf_page_sizes_mm(path: Path) -> list[tuple[float, float]]:
    with pdfium.PdfDocument(str(path)) as pdf:
        return [(w / 72 * 25.4, h / 72 * 25.4) for w, h in (pdf[i].get_size() for i in range(len(pdf)))]


@pytest.mark.parametrize(
    ("resolution", "paper"),
    [
        (Resolution.STANDARD, PaperSize.A4),
        (Resolution.FINE, PaperSize.LETTER),
        (Resolution.SUPERFINE, PaperSize.LEGAL),
        (Resolution.FINE, PaperSize.A4),
    ],
)
def test_tiff_to_pdf_keeps_page_count_and_paper_size(
    tmp_path: Path, resolution: Resolution, paper: PaperSize
) -> None:
    doc = prepare_fax_tiff(
        F.text_pdf(tmp_path, pages=2), tmp_path / "fax.tif", resolution=resolution, paper=paper
    )
    pdf = tiff_to_pdf(doc.path, tmp_path / "fax.pdf")
    sizes = _pdf_page_sizes_mm(pdf)
    assert len(sizes) == 2
    for width, length in sizes:
        assert abs(length - paper.length_mm) / paper.length_mm < 0.02
        assert abs(width - 215.1) / 215.1 < 0.02  # the 1728-pel scan line, T.4 §2.2 (A4 paper is 210 mm)


def test_tiff_to_pdf_embeds_group4_data_unchanged(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(sample_document(), tmp_path / "fax.tif")
    pdf = tiff_to_pdf(doc.path, tmp_path / "fax.pdf")
    with Image.open(doc.path) as tif:
        strips = []
        for index in range(tif.n_frames):
            tif.seek(index)
            (offset,), (length,) = tif.tag_v2[273], tif.tag_v2[279]
            strips.append(doc.path.read_bytes()[offset : offset + length])
    with pikepdf.open(pdf) as parsed:
        streams = []
        for page in parsed.pages:
            (image,) = page.Resources.XObject.values()
            filters = image.Filter if isinstance(image.Filter, pikepdf.Array) else [image.Filter]
            assert [str(f) for f in filters] == ["/CCITTFaxDecode"]
            streams.append(image.read_raw_bytes())
    assert streams == strips


def test_tiff_to_pdf_shows_the_same_picture(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(sample_document(), tmp_path / "fax.tif", resolution=Resolution.STANDARD)
    pdf = tiff_to_pdf(doc.path, tmp_path / "fax.pdf")
    sent = read_tiff_pages(doc.path)
    with pdfium.PdfDocument(str(pdf)) as rendered:
        for index, original in enumerate(sent):
            page = rendered[index]
            image = page.render(scale=1728 / page.get_width(), grayscale=True).to_pil().convert("L")
            image = image.resize(original.size, Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
            diff = ImageChops.difference(image, original.convert("L"))
            wrong = diff.histogram()[255] / (original.width * original.height)
            assert wrong < 0.03, f"page {index + 1}: {wrong:.1%} of pixels differ (inverted or shifted?)"


def test_tiff_to_pdf_handles_what_spandsp_writes(spandsp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # spandsp's receiver writes FillOrder LSB-to-MSB Group 4 (T.6) or Group 3 (T.4) files.
    doc = prepare_fax_tiff(F.text_pdf(tmp_path, pages=2), tmp_path / "fax.tif", resolution=Resolution.FINE)
    for encoding in (T4_COMPRESSION_ITU_T6, T4_COMPRESSION_ITU_T4_1D):
        rx = tmp_path / f"rx-{encoding}.tif"
        spandsp_relay(spandsp, doc.path, rx, encoding)
        sizes = _pdf_page_sizes_mm(tiff_to_pdf(rx, tmp_path / f"rx-{encoding}.pdf"))
        assert len(sizes) == 2
        assert all(
            abs(length - 297) < 297 * 0.02 and abs(width - 215.1) < 215.1 * 0.02 for width, length in sizes
        )


def test_tiff_to_pdf_refuses_bad_input_without_writing(tmp_path: Path) -> None:
    for src in (F.corrupt_tiff(tmp_path), F.text_pdf(tmp_path), F.truncated_tiff(tmp_path)):
        with pytest.raises(DocumentError):
            tiff_to_pdf(src, tmp_path / "out.pdf")
        assert not (tmp_path / "out.pdf").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_previews_are_one_png_per_page_with_the_physical_aspect(tmp_path: Path) -> None:
    doc = prepare_fax_tiff(
        F.text_pdf(tmp_path, pages=3), tmp_path / "fax.tif", resolution=Resolution.STANDARD
    )
    previews = tiff_previews(doc.path, tmp_path / "previews", max_width=600)
    assert [p.name for p in previews] == ["fax-001.png", "fax-002.png", "fax-003.png"]
    for path in previews:
        assert detect_kind(path) == "png"
        with Image.open(path) as im:
            assert im.width == 600
            assert abs(im.height - 600 * 297 / 215.1) <= 3  # not squashed to half height at standard
    assert sorted(os.listdir(tmp_path / "previews")) == [p.name for p in previews]


def test_previews_of_a_bad_tiff_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "previews"
    with pytest.raises(DocumentError):
        tiff_previews(F.truncated_tiff(tmp_path), out)
    assert not out.exists() or os.listdir(out) == []


def test_read_tiff_pages_returns_bilevel_pages(tmp_path: Path) -> None:
    pages = read_tiff_pages(F.tiff(tmp_path, pages=2, mode="L"))
    assert [p.mode for p in pages] == ["1", "1"]
    with pytest.raises(DocumentError):
        read_tiff_pages(F.text_pdf(tmp_path))


def test_sample_document_is_a_small_three_page_pdf_with_8_point_text() -> None:
    path = sample_document()
    assert path.stat().st_size < 200_000
    with pdfium.PdfDocument(str(path)) as pdf:
        assert len(pdf) == 3
        text = pdf[0].get_textpage().get_text_range()
    assert "8 pt The quick brown fox" in text


def test_written_tiff_is_a_plain_classic_tiff(tmp_path: Path) -> None:
    # Little-endian classic TIFF (not BigTIFF) as TIFF-F readers expect.
    doc = prepare_fax_tiff(F.text_pdf(tmp_path), tmp_path / "out.tif")
    head = doc.path.read_bytes()[:8]
    assert head[:4] == b"II*\x00" and struct.unpack("<I", head[4:])[0] >= 8
    assert isinstance(Image.open(io.BytesIO(doc.path.read_bytes())), TiffImagePlugin.TiffImageFile)
