"""Stage ``depth``: a depth map for every extracted image (Depth Anything V2 where the dataset has none).

A thin caller of :func:`stackmff.data.depth.estimate_depth`. Input ``data/extracted/<name>/`` (``images/``, optional
``depth/``), output ``data/depth/<name>/`` with ``images/`` and ``depth/<stem>.png`` for every image, all in one
convention: 16-bit, per-image normalised relative disparity, larger = nearer (what synthesis reads). Depth maps
that come with the dataset (NYU Depth V2: 8-bit, larger = farther) are inverted into it; the others are estimated
by Depth Anything V2 from the local checkpoint ``depth.checkpoint`` (nothing is downloaded at run time).

A dataset the extract stage reported ``absent`` stays absent (``depth.json`` says so; nothing else is written) and
needs no checkpoint.

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
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, load_image, natural_key, save_image

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.depth")


def run(params: DepthParams, dataset: str, extracted: str | Path, out: str | Path) -> dict:
    """Write ``out/images`` and ``out/depth`` (disparity, larger = nearer) for every image of ``extracted``.

    Args:
        params: the ``depth:`` section (checkpoint, device, dtype, batch size).
        dataset: dataset name (for messages).
        extracted: output folder of the extract stage.
        out: output folder (created).

    Returns:
        The status written to ``<out>/depth.json``: ``absent``, or ``ok`` with the numbers of images, converted
        dataset depth maps and estimated ones.

    Raises:
        StackMFFError: images lack depth and ``depth.checkpoint`` is empty or not a Depth Anything checkpoint.
    """
    extracted, out = Path(extracted), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = extracted / "extract.json"
    state = json.loads(marker.read_text()) if marker.is_file() else {"status": "ok"}
    if state.get("status") == "absent":
        log.info("%s: raw data absent (extract stage skipped it); no depth to compute", dataset)
        status = {"dataset": dataset, "status": "absent"}
        write_json(out / "depth.json", status)
        return status
    src_images = extracted / "images"
    if not src_images.is_dir():
        raise StackMFFError(f"{dataset}: {src_images} not found; run the extract stage first (dvc repro extract)")
    images = sorted((p for p in src_images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
    (out / "images").mkdir(exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    converted = 0
    for img in images:
        shutil.copyfile(img, out / "images" / img.name)
        given = extracted / "depth" / f"{img.stem}.png"
        if given.is_file():  # dataset depth (NYU): larger = farther -> disparity, larger = nearer
            d, _ = load_image(given)
            save_image(out / "depth" / f"{img.stem}.png", 1.0 - d[0], bit_depth=16, overwrite=True)
            converted += 1
    estimated = 0
    if converted < len(images):
        missing = len(images) - converted
        if not params.checkpoint:
            raise StackMFFError(
                f"{dataset}: {missing} images have no depth and depth.checkpoint is empty; download Depth Anything V2 "
                "once (huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf --local-dir <dir>) and set "
                "depth.checkpoint: <dir> in params.yaml"
            )
        from stackmff.data.depth import estimate_depth

        stats = estimate_depth(
            out / "images",
            out / "depth",
            checkpoint=params.checkpoint,
            batch_size=params.batch_size,
            device=params.device,
            dtype=params.dtype,
            progress=False,
        )
        estimated = int(stats["written"])
    status = {"dataset": dataset, "status": "ok", "images": len(images), "converted": converted, "estimated": estimated}
    write_json(out / "depth.json", status)
    log.info("%s: %d images, %d dataset depth maps, %d estimated", dataset, len(images), converted, estimated)
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("depth", "Depth (disparity) maps for every image of one extracted dataset.")
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
