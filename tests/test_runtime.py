"""vfax.service.runtime: the service's garbage-collector settings (checked in a child process: they are
process-wide and must not leak into the test run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tune_for_real_time_freezes_start_up_objects_and_makes_collections_rare() -> None:
    code = (
        "import gc, json; from vfax.service.runtime import GC_THRESHOLDS, tune_for_real_time;"
        "before = gc.get_freeze_count(); tune_for_real_time();"
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold(), list(GC_THRESHOLDS)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    before, after, thresholds, expected = json.loads(out.stdout)
    assert before == 0 and after > 1000  # the modules' objects are out of the collector's way
    assert thresholds == expected and thresholds[0] > 700  # far fewer young collections than default


def test_the_service_applies_it_before_running() -> None:
    source = (ROOT / "vfax" / "cli" / "serve.py").read_text()  # the `vfax serve` command
    assert source.index("runtime.tune_for_real_time()") < source.index("asyncio.run(run_service(cfg))")
