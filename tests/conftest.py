"""Shared pytest fixtures. Helpers that tests import directly live in ``tests/_helpers.py``."""

from __future__ import annotations

import logging

import pytest
from _helpers import SHARED_DATA


@pytest.fixture
def shared_data():
    """Path of ``../shared/data`` (real sample stacks, research use only); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _stackmff_logger_propagates():
    """Let caplog see the ``stackmff`` logger even after the CLI has switched propagation off."""
    logger = logging.getLogger("stackmff")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    logger.propagate = True
    yield
    logger.handlers[:], logger.propagate, logger.level = handlers, propagate, level
