"""Tests for the external-tool adapter's output reading (a stand-in tool: ``cp`` copies one layer as the result)."""

from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

from stackmff.io import load_image
from stackmff.peers import ExternalTool

pytestmark = pytest.mark.skipif(shutil.which("cp") is None, reason="needs cp on PATH")


def test_fuse_files_reads_the_output_like_load_image_and_drops_alpha(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 65536, (12, 16, 4), dtype=np.uint16)  # enfuse-like: 16-bit with an alpha mask
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "b.png"), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    tool = ExternalTool(name="copy", description="first layer", command=("cp", "{input_dir}/000.png", "{output}"))
    run = tool.fuse_files([tmp_path / "a.png", tmp_path / "b.png"])
    want, bits = load_image(tmp_path / "a.png")
    assert run.bit_depth == bits == 16 and run.image.shape == (3, 12, 16) and run.image.dtype == np.float32
    np.testing.assert_array_equal(run.image, want)
    np.testing.assert_array_equal(run.image[0], rgba[..., 2] / np.float32(65535.0))  # BGR(A) file -> RGB


def test_fuse_files_reports_the_tools_own_wall_and_cpu_seconds(tmp_path):
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    busy = "import shutil, sys\nx = sum(i * i for i in range(300000))\nshutil.copyfile(sys.argv[1], sys.argv[2])"
    tool = ExternalTool(
        name="busy_copy",
        description="burns CPU, then copies",
        command=(sys.executable, "-c", busy, "{input_dir}/000.png", "{output}"),
    )
    run = tool.fuse_files([tmp_path / "a.png", tmp_path / "b.png"])
    # the tool's commands only: less than the whole call (which also copies the layers and reads the output)
    assert 0 < run.tool_seconds <= run.seconds
    assert run.cpu_seconds > 0 and run.peak_mb > 0  # from the child's rusage (Linux, macOS: os.wait4)


def test_fuse_layers_writes_registered_layers_at_the_bit_depth_and_skips_alignment():
    layers = np.random.default_rng(1).random((2, 3, 10, 14)).astype(np.float32)
    # the option goes right after the program name; the alignment step would fail the run if it ran
    tool = ExternalTool(
        name="copy_second",
        description="second layer",
        command=("cp", "{input_dir}/001.png", "{output}"),
        align=(("false",),),
    )
    for bits, step in ((16, 65535.0), (8, 255.0)):
        run = tool.fuse_layers(layers, bit_depth=bits)
        assert run.bit_depth == bits
        np.testing.assert_allclose(run.image, np.round(layers[1] * step) / step, atol=1e-6)
    verbose = tool.fuse_layers(layers, options=("-v",))  # cp -v <in> <out>: still a copy
    np.testing.assert_allclose(verbose.image, np.round(layers[1] * 255) / 255, atol=1e-6)
