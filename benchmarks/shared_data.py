"""Where the benchmarks find ../shared (the project's data folder): $FOCUSFUSE_SHARED, else beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("FOCUSFUSE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
