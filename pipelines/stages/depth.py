"""Stage ``depth``: add a depth map to every extracted image that has none (Depth Anything V2).

Input ``data/extracted/<name>/`` (``images/``, optional ``depth/``), output ``data/depth/<name>/`` with ``images/``
and ``depth/<stem>.png`` (16-bit, larger = nearer) for every image. A dataset the extract stage reported
``absent`` stays absent. The model is loaded from the local Hugging Face cache only (nothing is downloaded at run
time); ``stackmff.data.depth.estimate_depth`` does the inference.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.depth --params params.yaml --dataset ADE20K data/extracted/ADE20K data/depth/ADE20K
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import DepthParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff._checks import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, natural_key

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.depth")


def run(params: DepthParams, dataset: str, extracted: str | Path, out: str | Path) -> dict:
    """Copy images and existing depth maps of ``extracted`` to ``out`` and estimate the missing depth maps."""
    extracted, out = Path(extracted), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = extracted / "extract.json"
    state = json.loads(marker.read_text()) if marker.is_file() else {"status": "ok"}
    if state.get("status") == "absent":
        status = {"dataset": dataset, "status": "absent"}
        write_json(out / "depth.json", status)
        return status
    images = sorted(
        (p for p in (extracted / "images").glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key
    )
    (out / "images").mkdir(exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    missing = []
    for img in images:
        shutil.copyfile(img, out / "images" / img.name)
        have = sorted((extracted / "depth").glob(img.stem + ".*")) if (extracted / "depth").is_dir() else []
        if have:
            shutil.copyfile(have[0], out / "depth" / have[0].name)
        else:
            missing.append(img)
    if missing:
        try:
            from stackmff.data.depth import estimate_depth
        except ModuleNotFoundError as exc:
            if exc.name != "stackmff.data.depth":
                raise
            raise StackMFFError(
                f"{dataset}: {len(missing)} images lack depth and stackmff.data.depth is not in this checkout"
            ) from None
        estimate_depth(missing, out / "depth", model=params.model, device=params.device, batch_size=params.batch_size)
    status = {"dataset": dataset, "status": "ok", "images": len(images), "estimated": len(missing)}
    write_json(out / "depth.json", status)
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("depth", "Estimate missing depth maps of one extracted dataset.")
    p.add_argument("--dataset", required=True)
    p.add_argument("extracted", help="output of the extract stage")
    p.add_argument("out", help="images/ + depth/ for every image")
    a = p.parse_args(argv)
    run(load_params(a.params, "depth"), a.dataset, a.extracted, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
