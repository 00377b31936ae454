"""Releasing the CUDA libraries' file pages on a CPU run leaves torch working."""

from __future__ import annotations

import sys

import pytest
import torch

from stackmff.models.device import drop_gpu_library_pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_dropping_gpu_library_pages_keeps_torch_working():
    x = torch.rand(1, 3, 32, 32)
    w = torch.rand(4, 3, 3, 3)
    before = torch.nn.functional.conv2d(x, w)
    assert drop_gpu_library_pages() >= 0
    torch.cuda.is_available()  # code of the released libraries is read back from the files when used
    np_after = torch.nn.functional.conv2d(x, w)
    assert torch.equal(before, np_after)
    assert drop_gpu_library_pages() >= 0  # twice is harmless
