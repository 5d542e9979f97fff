"""Generate ``sample.pdf``, the bundled three-page test fax.

Run ``python vfax/samples/make_sample.py`` from the repository root. The PDF is written by hand (vector
text in the base-14 fonts, vector lines and fills, one small embedded JPEG "photo") so that it stays small
and exercises what a fax server meets in practice: text from 6 to 36 points (8-point body text included),
hairlines, a table, a bar chart with gray fills, a line chart, and a photographic image next to text.
The output is deterministic (no dates), so regenerating it gives the same bytes.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

A4 = (595.28, 841.89)  # points
FONTS = {"F1": "Helvetica", "F2": "Helvetica-Bold", "F3": "Courier"}


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


class Page:
    """A content stream under construction (PDF 32000-1 §8 and §9 operators)."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.images: dict[str, bytes] = {}

    def text(self, x: float, y: float, size: float, text: str, font: str = "F1") -> None:
        self.ops.append(f"BT /{font} {size:g} Tf {x:.2f} {y:.2f} Td ({_esc(text)}) Tj ET")

    def line(self, x1: float, y1: float, x2: float, y2: float, width: float = 1.0) -> None:
        self.ops.append(f"{width:g} w {x1:.2f} {y1:.2f} m {x2:.2f} {y2:.2f} l S")

    def rect(
        self, x: float, y: float, w: float, h: float, *, fill: float | None = None, width: float = 1
    ) -> None:
        if fill is None:
            self.ops.append(f"{width:g} w {x:.2f} {y:.2f} {w:.2f} {h:.2f} re S")
        else:
            self.ops.append(f"{fill:g} g {x:.2f} {y:.2f} {w:.2f} {h:.2f} re f 0 g")

    def polyline(self, points: list[tuple[float, float]], width: float = 1.0) -> None:
        path = " ".join(f"{x:.2f} {y:.2f} {'m' if i == 0 else 'l'}" for i, (x, y) in enumerate(points))
        self.ops.append(f"{width:g} w {path} S")

    def image(self, name: str, jpeg: bytes, x: float, y: float, w: float, h: float) -> None:
        self.images[name] = jpeg
        self.ops.append(f"q {w:.2f} 0 0 {h:.2f} {x:.2f} {y:.2f} cm /{name} Do Q")

    def stream(self) -> bytes:
        return "\n".join(self.ops).encode("latin-1")


def _photo_jpeg(width: int = 360, height: int = 240) -> tuple[bytes, int, int]:
    """A synthetic photograph: sky gradient, sun, hills, soft shading; grayscale JPEG."""
    img = Image.new("L", (width, height))
    px = img.load()
    assert px is not None
    for y in range(height):
        for x in range(width):
            px[x, y] = int(235 - 120 * y / height + 10 * math.sin(x / 17.0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 30, 310, 90), fill=250)
    for i, (shade, base) in enumerate(((150, 150), (100, 175), (60, 205))):
        points = [(x, base + 25 * math.sin(x / (40 + 15 * i) + i)) for x in range(0, width + 10, 10)]
        draw.polygon([*points, (width, height), (0, height)], fill=shade)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80)
    return out.getvalue(), width, height


def cover_page() -> Page:
    p = Page()
    w, h = A4
    p.rect(36, 36, w - 72, h - 72, width=2)
    p.text(60, h - 110, 36, "FAX", "F2")
    p.text(170, h - 110, 14, "vfax sample document - page 1 of 3", "F1")
    p.line(60, h - 125, w - 60, h - 125, 1.5)
    fields = [
        ("To:", "Accounts Payable, Example Corp."),
        ("Fax:", "+1 555 0100 200"),
        ("From:", "Jane Q. Sender"),
        ("Fax:", "+44 20 7946 0999"),
        ("Date:", "Tuesday, 3 March 2026"),
        ("Pages:", "3 (including this cover)"),
        ("Subject:", "Invoice 2026-0042 and delivery schedule"),
    ]
    y = h - 165
    for label, value in fields:
        p.text(60, y, 12, label, "F2")
        p.text(140, y, 12, value)
        p.line(140, y - 4, w - 60, y - 4, 0.5)
        y -= 26
    y -= 10
    p.text(60, y, 14, "Message", "F2")
    y -= 22
    body = [
        "Please find attached the invoice for the March delivery together with the revised",
        "delivery schedule. The amounts in the table on page 2 supersede those of our letter",
        "of 12 February. Payment terms are unchanged: 30 days net from the date of invoice.",
        "Should any page be illegible, please call us and we will resend it at fine resolution.",
    ]
    for line in body:
        p.text(60, y, 11, line)
        y -= 15
    y -= 20
    p.text(60, y, 10, "Sizes: 10 pt The quick brown fox jumps over the lazy dog 0123456789")
    y -= 16
    p.text(60, y, 9, "9 pt The quick brown fox jumps over the lazy dog 0123456789")
    y -= 14
    p.text(60, y, 8, "8 pt The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    y -= 12
    p.text(60, y, 8, "8 pt Courier: Ref 2026-0042/INV  IBAN GB33 BUKB 2020 1555 5555 55", "F3")
    y -= 12
    p.text(60, y, 7, "7 pt Small print: amounts in EUR; VAT 20% included where applicable.")
    y -= 10
    p.text(
        60,
        y,
        6,
        "6 pt Fine print: this fax may contain confidential information intended only for the addressee.",
    )
    p.line(60, 90, w - 60, 90, 0.25)
    p.text(
        60,
        75,
        8,
        "CONFIDENTIALITY: if you received this fax in error, please notify the sender at +44 20 7946 0999.",
    )
    return p


def table_page() -> Page:
    p = Page()
    w, h = A4
    p.text(60, h - 80, 18, "Invoice 2026-0042", "F2")
    p.text(60, h - 100, 10, "Page 2 of 3 - items, amounts and delivery volumes")
    cols = [60, 110, 330, 400, 470, w - 60]
    heads = ["Item", "Description", "Qty", "Unit", "Amount"]
    rows = [
        ("1", "Steel brackets, galvanised, 40 mm", "1200", "0.35", "420.00"),
        ("2", "Hex bolts M8 x 30, zinc plated", "5000", "0.04", "200.00"),
        ("3", "Washers M8, DIN 125", "5000", "0.01", "50.00"),
        ("4", "Cable ties 200 mm, black (pack of 100)", "40", "3.90", "156.00"),
        ("5", "Mounting rail 35 mm, 2 m", "60", "4.75", "285.00"),
        ("6", "Delivery and handling", "1", "45.00", "45.00"),
    ]
    top = h - 130
    row_h = 20
    p.rect(cols[0], top - row_h, cols[-1] - cols[0], row_h, fill=0.8)
    for i, head in enumerate(heads):
        p.text(cols[i] + 4, top - 14, 10, head, "F2")
    for r, row in enumerate(rows, start=1):
        for i, cell in enumerate(row):
            p.text(cols[i] + 4, top - r * row_h - 14, 9, cell)
    bottom = top - (len(rows) + 1) * row_h
    for r in range(len(rows) + 2):
        p.line(cols[0], top - r * row_h, cols[-1], top - r * row_h, 0.75)
    for x in cols:
        p.line(x, top, x, bottom, 0.75)
    p.text(cols[3] + 4, bottom - 16, 10, "Total", "F2")
    p.text(cols[4] + 4, bottom - 16, 10, "1,156.00", "F2")

    # Bar chart: deliveries per month, black and gray bars.
    base_y, base_x = 300, 90
    p.text(60, 540, 14, "Deliveries per month (units)", "F2")
    p.line(base_x, base_y, base_x, 520, 1)
    p.line(base_x, base_y, w - 70, base_y, 1)
    for k in range(0, 6):
        y = base_y + k * 40
        p.line(base_x - 4, y, base_x, y, 1)
        p.line(base_x, y, w - 70, y, 0.25)
        p.text(58, y - 3, 8, f"{k * 100}")
    months = ["Oct", "Nov", "Dec", "Jan", "Feb", "Mar"]
    values = [120, 180, 90, 210, 160, 195]
    plan = [150, 150, 150, 200, 200, 200]
    for i, (month, value, target) in enumerate(zip(months, values, plan, strict=True)):
        x = base_x + 20 + i * 72
        p.rect(x, base_y, 24, value * 0.4, fill=0.0)
        p.rect(x + 26, base_y, 24, target * 0.4, fill=0.6)
        p.text(x + 12, base_y - 14, 9, month)
    p.rect(w - 200, 500, 10, 10, fill=0.0)
    p.text(w - 185, 501, 9, "delivered")
    p.rect(w - 200, 484, 10, 10, fill=0.6)
    p.text(w - 185, 485, 9, "planned")

    # Line chart and line weights.
    p.text(60, 250, 14, "Lead time (days) and line weights", "F2")
    p.line(90, 80, 90, 230, 1)
    p.line(90, 80, 330, 80, 1)
    p.polyline([(90 + i * 20, 100 + 60 * (0.5 + 0.5 * math.sin(i / 2.0))) for i in range(13)], 1.5)
    for i, weight in enumerate((0.25, 0.5, 1.0, 2.0, 4.0)):
        y = 220 - i * 30
        p.line(370, y, w - 70, y, weight)
        p.text(370, y + 5, 8, f"{weight:g} pt")
    return p


def mixed_page(photo: bytes, pw: int, ph: int) -> Page:
    p = Page()
    w, h = A4
    p.text(60, h - 80, 18, "Delivery schedule and site notes", "F2")
    p.text(60, h - 100, 10, "Page 3 of 3")
    p.image("Im1", photo, 60, h - 360, 240, 240 * ph / pw)
    p.text(60, h - 375, 8, "Figure 1: loading bay, north entrance (photograph).")
    notes = [
        "Deliveries are accepted Monday to",
        "Friday between 07:00 and 15:30.",
        "Please announce trucks longer than",
        "12 m at least one day in advance.",
        "",
        "The loading bay (figure 1) has a",
        "maximum clearance of 4.2 m.",
    ]
    y = h - 140
    for line in notes:
        p.text(320, y, 11, line)
        y -= 15
    p.rect(320, h - 360, w - 380, 70, fill=0.85)
    p.text(330, h - 315, 10, "Note:", "F2")
    p.text(330, h - 330, 9, "Gate code changes on 1 April.")
    p.text(330, h - 345, 9, "New code is sent separately.")
    y = h - 420
    p.text(60, y, 14, "Schedule", "F2")
    y -= 20
    schedule = [
        ("Mon 9 March", "Steel brackets, hex bolts, washers", "Truck 7.5 t"),
        ("Wed 11 March", "Cable ties, mounting rails", "Van"),
        ("Fri 13 March", "Remaining rails (back order)", "Van"),
    ]
    for day, what, vehicle in schedule:
        p.text(60, y, 11, day, "F2")
        p.text(170, y, 11, what)
        p.text(430, y, 11, vehicle)
        y -= 16
    y -= 14
    paragraph = [
        "Terms: goods remain our property until paid in full. Transport damage must be noted on the",
        "delivery note and reported within 48 hours. Returns need a return number (RMA) from our office.",
        "Small text test (8 pt): il1| O0o 8B rn m cl d vv w ,.;: \"quotes\" 'apostrophes' (brackets).",
    ]
    for i, line in enumerate(paragraph):
        p.text(60, y, 8 if i == 2 else 9, line, "F1")
        y -= 13
    p.line(60, 80, w - 60, 80, 0.5)
    p.text(60, 65, 8, "Example Corp. - 1 Example Street - London - sample document generated by vfax")
    return p


def build_pdf(pages: list[Page], size: tuple[float, float] = A4) -> bytes:
    """Serialise pages into a PDF 1.4 file (classic xref table, Flate-compressed content streams)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    font_ids = {
        name: add(f"<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>".encode())
        for name, base in FONTS.items()
    }
    font_dict = " ".join(f"/{name} {oid} 0 R" for name, oid in font_ids.items())
    pages_id = len(objects) + 1
    objects.append(b"")  # placeholder for the page tree
    kids = []
    for page in pages:
        xobjects = []
        for name, jpeg in page.images.items():
            with Image.open(io.BytesIO(jpeg)) as im:
                iw, ih = im.size
            header = (
                f"<< /Type /XObject /Subtype /Image /Width {iw} /Height {ih} /ColorSpace /DeviceGray "
                f"/BitsPerComponent 8 /Filter /DCTDecode /Length {len(jpeg)} >>\nstream\n"
            ).encode()
            image_id = add(header + jpeg + b"\nendstream")
            xobjects.append(f"/{name} {image_id} 0 R")
        data = zlib.compress(page.stream(), 9)
        content = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream")
        resources = f"/Font << {font_dict} >>"
        if xobjects:
            resources += f" /XObject << {' '.join(xobjects)} >>"
        kids.append(
            add(
                f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {size[0]:g} {size[1]:g}] "
                f"/Resources << {resources} >> /Contents {content} 0 R >>".encode()
            )
        )
    kid_refs = " ".join(f"{k} 0 R" for k in kids)
    objects[pages_id - 1] = f"<< /Type /Pages /Kids [{kid_refs}] /Count {len(kids)} >>".encode()
    info = add(b"<< /Title (vfax sample fax) /Producer (vfax make_sample.py) >>")
    catalog = add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())

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
        f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R /Info {info} 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("sample.pdf")
    photo, pw, ph = _photo_jpeg()
    data = build_pdf([cover_page(), table_page(), mixed_page(photo, pw, ph)])
    target.write_bytes(data)
    logging.getLogger("make_sample").info("wrote %s (%d bytes)", target, len(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
