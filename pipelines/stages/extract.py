"""Stage ``extract``: bring one raw training dataset (``data/raw/<name>/``) into a flat images folder.

A dataset whose raw folder holds no images (only the committed ``README.md``) is skipped cleanly: the output gets
an ``extract.json`` with ``"status": "absent"`` and downstream stages see an unchanged output. Present data is
handed to ``stackmff.data.extract.extract_dataset`` (ADE20K/Cityscapes flattening, DUTS uniform-background filter,
DIODE re-encoding, NYU cropping, as described in SPEC.md).

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.extract --params params.yaml --dataset ADE20K data/raw/ADE20K data/extracted/ADE20K
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import ExtractParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff._checks import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS

__all__ = ["has_raw_data", "main", "run"]

log = logging.getLogger("stackmff.pipelines.extract")


def has_raw_data(raw: Path) -> bool:
    """True when ``raw`` holds at least one image (or an archive) anywhere below it."""
    if not raw.is_dir():
        return False
    wanted = IMAGE_EXTENSIONS | {".zip", ".tar", ".gz", ".mat", ".h5", ".npy"}
    return any(p.suffix.lower() in wanted for p in raw.rglob("*") if p.is_file())


def run(params: ExtractParams, dataset: str, raw: str | Path, out: str | Path) -> dict:
    """Extract ``dataset`` from ``raw`` into ``out`` (``images/`` and, where the source has it, ``depth/``).

    Returns:
        The status written to ``<out>/extract.json`` (``absent`` or ``ok`` with a count).
    """
    raw, out = Path(raw), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not has_raw_data(raw):
        log.warning("%s: no raw data in %s; skipped (see data/raw/README.md)", dataset, raw)
        status = {"dataset": dataset, "status": "absent"}
        write_json(out / "extract.json", status)
        return status
    try:
        from stackmff.data.extract import extract_dataset
    except ModuleNotFoundError as exc:
        if exc.name not in ("stackmff.data.extract",):
            raise
        raise StackMFFError(
            f"{dataset}: raw data found but stackmff.data.extract is not in this checkout; remove {raw} or update"
        ) from None
    count = extract_dataset(
        dataset,
        raw,
        out,
        max_images=params.max_images,
        duts_uniform_fraction=params.duts_uniform_fraction,
        nyu_crop=tuple(params.nyu_crop),
    )
    status = {"dataset": dataset, "status": "ok", "images": int(count)}
    write_json(out / "extract.json", status)
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("extract", "Extract one raw training dataset.")
    p.add_argument("--dataset", required=True)
    p.add_argument("raw", help="raw download folder")
    p.add_argument("out", help="output folder (images/, depth/, extract.json)")
    a = p.parse_args(argv)
    run(load_params(a.params, "extract"), a.dataset, a.raw, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
