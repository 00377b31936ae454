"""Where the shipped weights live: importable without torch (``stackmff methods`` lists which are missing)."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
# The shipped weights; STACKMFF_WEIGHTS overrides the location (e.g. an installed package without the repo tree).
DEFAULT_WEIGHTS = Path(os.environ.get("STACKMFF_WEIGHTS", WEIGHTS_DIR / "stackmff_v3.pt"))
DEFAULT_STAR_WEIGHTS = Path(os.environ.get("STACKMFF_STAR_WEIGHTS", WEIGHTS_DIR / "stackmff_v3_star.pt"))
