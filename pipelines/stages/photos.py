"""Stage ``photos``: the photo bank of natural-image training scenes (``stackmff.data.photos.collect_photos``).

Writes ``<out>/<source>/<name>.png``, ``LICENSES.md`` (every file with its source and licence) and
``manifest.json``. The default sources are pip-installed (the photographs bundled in scikit-image and matplotlib),
so a fresh clone runs this stage with nothing else installed; extra folders (``photos.folders``, e.g. Debian
wallpaper packages whose copyright file allows the use) belong to non-default profiles. The bank is read by
``synthesize`` (``source: photos``) and by ``stackmff train --photos``. Never committed: it is a DVC output.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.photos --params params.yaml data/photos
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import PhotosParams, load_params
from pipelines.stages._common import parser, run_main

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.photos")


def run(params: PhotosParams, out: str | Path) -> dict:
    """Write the photo bank into ``out`` (replacing it: DVC removes its outputs before a stage runs anyway)."""
    from stackmff.data.photos import collect_photos

    folders = {name: (f.path, f.licence, f.include) for name, f in params.folders.items()}
    man = collect_photos(out, params.sources, folders=folders, max_side=params.max_side, overwrite=True)
    log.info("photo bank %s: %d photographs", out, man["count"])
    return man


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("photos", "Write the photo bank (photographs + licences) for natural-image training scenes.")
    p.add_argument("out", help="folder to write")
    a = p.parse_args(argv)
    run(load_params(a.params, "photos"), a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
