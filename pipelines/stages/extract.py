"""Stage ``extract``: bring one raw training dataset (``data/raw/<name>/``) into a flat images folder.

A thin caller of :func:`stackmff.data.extract.extract_dataset` (ADE20K / Cityscapes flattening, DUTS
uniform-background filter, DIODE re-encoding, NYU Depth V2 cropping and test split, as upstream prepares them).
Output ``<out>/``: ``images/``, ``depth/`` (NYU Depth V2 only: 8-bit, larger = farther, as the library writes it),
``test/{images,depth}/`` (NYU's held-out images) and ``extract.json`` (status and counts).

A dataset whose raw folder is missing or holds neither images nor archives is skipped: the stage logs the path it
expected and what to download, writes an ``extract.json`` with ``"status": "absent"`` (an empty but valid output
that the depth and synthesize stages understand) and succeeds.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.extract --params params.yaml --dataset ADE20K data/raw/ADE20K data/extracted/ADE20K
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import ExtractParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff.data.extract import DATASETS, extract_dataset
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS

__all__ = ["has_raw_data", "main", "run"]

log = logging.getLogger("stackmff.pipelines.extract")

_ARCHIVES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".mat", ".h5"}


def has_raw_data(raw: Path) -> bool:
    """True when ``raw`` is an archive or a folder holding at least one image or archive anywhere below it."""
    if raw.is_file():
        return raw.suffix.lower() in _ARCHIVES
    if not raw.is_dir():
        return False
    wanted = IMAGE_EXTENSIONS | _ARCHIVES
    return any(p.suffix.lower() in wanted for p in raw.rglob("*") if p.is_file())


def run(params: ExtractParams, dataset: str, raw: str | Path, out: str | Path) -> dict:
    """Extract ``dataset`` from ``raw`` into ``out`` (``images/``; ``depth/`` and ``test/`` for NYU Depth V2).

    Args:
        params: the ``extract:`` section (NYU test split seed and size).
        dataset: a name of :data:`stackmff.data.extract.DATASETS`.
        raw: the official download (archive, folder of archives or unpacked folder).
        out: output folder (created).

    Returns:
        The status written to ``<out>/extract.json``: ``absent`` (with the expected path and the download) or ``ok``
        with the library's counts.

    Raises:
        StackMFFError: unknown dataset name, or raw data present but unreadable.
    """
    if dataset not in DATASETS:
        raise StackMFFError(f"unknown dataset {dataset!r} in extract.datasets; use some of {', '.join(DATASETS)}")
    raw, out = Path(raw), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not has_raw_data(raw):
        log.warning(
            "%s: no raw data at %s; skipped. To use it, download %s into %s (see data/raw/README.md)",
            dataset,
            raw,
            DATASETS[dataset],
            raw,
        )
        status = {"dataset": dataset, "status": "absent", "expected": str(raw), "download": DATASETS[dataset]}
        write_json(out / "extract.json", status)
        return status
    work = out / ".work"
    stats = extract_dataset(dataset, raw, work, seed=params.seed, nyu_test_count=params.nyu_test_count)
    # the library writes <root>/<name>/{images,depth} (+ <root>/NYU_Depth_V2_test); flatten into <out>
    for sub, dst in ((work / dataset, out), (work / f"{dataset}_test", out / "test")):
        for kind in ("images", "depth"):
            if (sub / kind).is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                os.replace(sub / kind, dst / kind)
    shutil.rmtree(work)
    count = sum(1 for _ in (out / "images").iterdir()) if (out / "images").is_dir() else 0
    status = {"dataset": dataset, "status": "ok", "images": count, **{k: int(v) for k, v in stats.items()}}
    write_json(out / "extract.json", status)
    log.info("%s: %d images", dataset, count)
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("extract", "Extract one raw training dataset.")
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("raw", help="raw download folder or archive")
    p.add_argument("out", help="output folder (images/, depth/, test/, extract.json)")
    a = p.parse_args(argv)
    run(load_params(a.params, "extract"), a.dataset, a.raw, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
