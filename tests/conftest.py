"""Shared pytest setup: Keras 2 for TF, and quiet TF logs."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import logging  # pylint: disable=wrong-import-position

import gin  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(autouse=True)
def _fresh_gin_config_and_log_level():
  """Every test starts from an empty gin config and absl's logger at its import-time level: a binding left by an
  earlier test in the same worker process, or absl's flag parsing in an in-process `app.run` (which sets the
  `absl` logger to WARNING), would otherwise change what a later test builds or sees in caplog, depending on
  how pytest-xdist shares the tests out."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.NOTSET)
  gin.clear_config()
  yield
  gin.clear_config()
  absl_logger.setLevel(level)
