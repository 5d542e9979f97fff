"""What a page image of the console costs: rendering one page of a fax TIFF to PNG (``GET .../pages/{n}.png``)
cold (rendered) and warm (from the page cache), per resolution and width, and the pages listing.

The bundled 3-page sample is converted at each resolution with vfax's own conversion; each figure is the
median of ``--repeat`` runs per page, through :class:`vfax.service.pages.PageImages` (the code the API
runs, without HTTP).

    .venv/bin/python bench/page_images.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import code_version  # noqa: E402
from vfax import documents  # noqa: E402
from vfax.service.pages import PageImages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"code {code_version()}")
    print(f"{'resolution':<10} {'width':>5} {'cold ms/page':>12} {'warm ms/page':>12} {'PNG bytes':>10}")
    with tempfile.TemporaryDirectory(prefix="vfax-bench-pages-") as tmp:
        root = Path(tmp)
        for res in documents.Resolution:
            tiff = documents.prepare_fax_tiff(
                documents.sample_document(), root / f"{res.name}.tif", resolution=res
            ).path
            t0 = time.perf_counter()
            pages = documents.tiff_page_info(tiff)
            listing = (time.perf_counter() - t0) * 1000
            for width in (160, 800, 2000):
                cold, warm, size = [], [], 0
                for run in range(args.repeat):
                    images = PageImages(root / f"cache-{res.name}-{width}-{run}")
                    for n in range(1, len(pages) + 1):
                        t0 = time.perf_counter()
                        data, _ = images.png("bench", tiff, n, width, 0)
                        cold.append((time.perf_counter() - t0) * 1000)
                        t0 = time.perf_counter()
                        images.png("bench", tiff, n, width, 0)
                        warm.append((time.perf_counter() - t0) * 1000)
                        size = max(size, len(data))
                print(
                    f"{res.name.lower():<10} {width:>5} {statistics.median(cold):>12.1f} "
                    f"{statistics.median(warm):>12.2f} {size:>10}"
                )
            print(f"{res.name.lower():<10} pages listing ({len(pages)} pages): {listing:.1f} ms")


if __name__ == "__main__":
    main()
