"""The peak-memory formula of `stackmff fuse` and the one-line refusal of what cannot fit."""

from __future__ import annotations

import pytest
from _helpers import synthetic_stack

from stackmff import _memory
from stackmff.errors import StackMFFError
from stackmff.fusion.budget import (
    STRIP_BYTES_PER_PIXEL,
    WORKING_BYTES_PER_PIXEL,
    check_fits,
    estimate_peak,
    strip_rows,
)
from stackmff.fusion.run import fuse_to_file
from stackmff.io import save_image

MB = 2**20


def test_formula_terms_classical():
    n, c, h, w = 50, 3, 4000, 6000  # 50 x 24 MP, 8-bit files
    est = estimate_peak("laplacian_pyramid", (n, c, h, w), input_bytes=n * c * h * w, learned=False, align=True)
    assert est.input == pytest.approx(n * c * h * w / MB)
    assert est.aligned == pytest.approx(2 * n * c * h * w / MB)  # a 16-bit warped copy (the default)
    assert estimate_peak(
        "laplacian_pyramid", (n, c, h, w), input_bytes=1, learned=False, align=True, aligned_bytes=1
    ).aligned == pytest.approx(n * c * h * w / MB)  # 8-bit files: 8-bit warped layers
    assert est.output == pytest.approx((6 * c + 8) * h * w / MB)
    # whole-image planes plus one row strip: not x N, and the strip does not grow with the height
    strip = STRIP_BYTES_PER_PIXEL["laplacian_pyramid"] * strip_rows("laplacian_pyramid", h, w) * w
    assert est.working == pytest.approx((WORKING_BYTES_PER_PIXEL["laplacian_pyramid"] * h * w + strip) / MB)
    for name in WORKING_BYTES_PER_PIXEL:
        # (the long side stays w: focus_measure's margin is 1 % of it)
        taller = estimate_peak(name, (n, c, h, w), input_bytes=0, learned=False, align=False)
        short = estimate_peak(name, (n, c, h // 2, w), input_bytes=0, learned=False, align=False)
        grows = taller.working - short.working
        assert grows == pytest.approx(WORKING_BYTES_PER_PIXEL[name] * (h - h // 2) * w / MB)
    assert est.budget is None
    # the loaded layers are freed once warped: the fusion runs beside the aligned copy only
    assert est.total == pytest.approx(est.libraries + est.aligned + max(est.input, est.output + est.working))
    plain = estimate_peak("laplacian_pyramid", (n, c, h, w), input_bytes=n * c * h * w, learned=False, align=False)
    assert plain.total == pytest.approx(plain.libraries + plain.input + plain.output + plain.working)
    assert est.total < 24 * 1024  # the 50 x 24 MP stack fits a 24 GB machine, alignment included
    for name in WORKING_BYTES_PER_PIXEL:
        other = estimate_peak(name, (n, c, h, w), input_bytes=n * c * h * w, learned=False, align=True)
        assert other.total < 24 * 1024


def test_formula_terms_learned():
    n, c, h, w = 50, 3, 4000, 6000
    est = estimate_peak(
        "stackmff_v3", (n, c, h, w), input_bytes=n * c * h * w, learned=True, align=True, memory_budget_mb=384
    )
    assert est.budget == 384
    # the network's budget plus the half-resolution probabilities of every layer the pyramid blend keeps (float32 at
    # 1/4 of the pixels), plus its planes
    assert est.working == pytest.approx(384 + (n + 12) * h * w / MB)
    # while the network runs the index and confidence maps are uint8 + float16 (3 bytes per pixel)
    assert est.output == pytest.approx((4 * c + 2 * c + 3) * h * w / MB)
    hard = estimate_peak(
        "stackmff_v3", (n, c, h, w), input_bytes=1, learned=True, align=False, memory_budget_mb=384, gather="hard"
    )
    assert hard.working == 384 and hard.aligned == 0
    assert est.total < 24 * 1024
    auto = estimate_peak("stackmff_v3", (2, 3, 10, 10), input_bytes=600, learned=True, align=False, available_mb=1000)
    assert auto.budget == 256  # the automatic budget's floor


def test_check_fits_refuses_in_one_line_naming_the_budget_and_the_fix():
    est = estimate_peak(
        "stackmff_v3", (10, 3, 3000, 4000), input_bytes=360 * MB, learned=True, align=False, memory_budget_mb=1024
    )
    check_fits(est, est.total + 1, "fusing")
    check_fits(est, None, "fusing")  # unknown: no check
    with pytest.raises(StackMFFError) as err:
        check_fits(est, 500, "fusing 10 layers")
    msg = str(err.value)
    assert "\n" not in msg and "1024 network budget" in msg and "--memory-budget" in msg and "500 MB" in msg


def test_fuse_refuses_a_stack_that_cannot_fit_before_fusing(tmp_path, monkeypatch):
    stack, _, _ = synthetic_stack(3, height=48, width=64, seed=1)
    for k, layer in enumerate(stack):
        save_image(tmp_path / f"{k}.png", layer)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 2**20)  # 1 MB free: the files decode, the fusion cannot run
    monkeypatch.setattr(_memory, "resident_mb", lambda: 0.0)
    out = tmp_path / "out" / "fused.png"
    out.parent.mkdir()
    with pytest.raises(StackMFFError) as err:
        fuse_to_file(tmp_path, out, "laplacian_pyramid")
    assert "\n" not in str(err.value) and "laplacian_pyramid" in str(err.value) and "MB is available" in str(err.value)
    assert not out.exists()
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)  # unknown (not Linux): no check
    fuse_to_file(tmp_path, out, "laplacian_pyramid")
    assert out.exists()
