"""Shared pytest setup: Keras 2 for TF, and quiet TF logs."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gin  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(autouse=True)
def _fresh_gin_config():
  """Every test starts from an empty gin config: a binding left by an earlier test in the same worker process
  would otherwise change what a later test builds, depending on how pytest-xdist shares the tests out."""
  gin.clear_config()
  yield
  gin.clear_config()
