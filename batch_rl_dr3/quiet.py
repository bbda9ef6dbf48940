"""Importing this module (first thing in an entry point) gives a quiet start-up: what libraries print on every start and is never news is dropped;
every other line (a real TensorFlow error, a GPU that fails to initialize, our own warnings) still shows.

Dropped, each with why it is noise here:
  * TensorFlow's C++ lines at import: cuFFT / cuDNN / cuBLAS "Unable to register ... factory" and "computation
    placer already registered" (the CUDA plugins are registered twice by the pip wheels; harmless, TF#62075),
    and absl's "All log messages before absl::InitializeLog()" preamble;
  * "failed call to cuInit" on a machine with no NVIDIA device (there is nothing to initialize; on a machine
    with one the line stays, as it is then news);
  * gym's deprecation notice: gym is imported by tf-agents and Dopamine for their type hints only; our
    environments are gymnasium / ale-py;
  * google.api_core's FutureWarning about Python 3.11's end of life (in 2027);
  * TensorFlow's Python INFO lines ("Sharding callback duration: 41 microseconds" at every checkpoint save);
    its warnings and errors stay;
  * gin's error-level "Path not found: continuous/base.gin" (and its info line before it): gin logs it while
    trying a Python-package reader for an `include` that the gin_configs/ search path then finds; a file
    that is really missing still fails with our one-line error.
"""
import logging as std_logging
import os
import re
import sys
import tempfile
import warnings

_TF_NOISE = [re.compile(p) for p in (
    r"Unable to register cu(FFT|DNN|BLAS) factory",
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"computation placer already registered",
)]
_NO_GPU_NOISE = re.compile(r"failed call to cuInit")


def _has_nvidia_device() -> bool:
  return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def is_noise(line: str, has_gpu: bool) -> bool:
  """True for a start-up line of TensorFlow's C++ runtime that is never news on this machine."""
  if any(p.search(line) for p in _TF_NOISE):
    return True
  return not has_gpu and bool(_NO_GPU_NOISE.search(line))


class _GinIncludeNoise(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    if not record.pathname.replace(os.sep, "/").endswith("gin/resource_reader.py"):
      return True
    message = str(record.msg)
    return not (message.startswith("Path not found") or message.startswith("system_path_file_exists"))


def _silence_gym_notice() -> None:
  try:
    from importlib.metadata import version  # pylint: disable=g-import-not-at-top
    import gym_notices.notices as notices  # pylint: disable=g-import-not-at-top
    notices.notices.pop(version("gym"), None)
  except Exception:  # pylint: disable=broad-except  (gym or its notices not installed: nothing to silence)
    pass


def _import_tensorflow_filtered() -> None:
  """Imports TensorFlow (and lets it look for GPUs) with fd 2 captured, then replays the lines that are news."""
  if "tensorflow" in sys.modules:
    return
  has_gpu = _has_nvidia_device()
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_physical_devices("GPU")  # CUDA's initialization and its lines happen now, captured
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    text = captured.read().decode("utf-8", errors="replace")
  kept = [line for line in text.splitlines() if line.strip() and not is_noise(line, has_gpu)]
  if kept:
    sys.stderr.write("\n".join(kept) + "\n")


def quiet_startup() -> None:
  """Call first in an entry point, before TensorFlow is imported. Idempotent."""
  warnings.filterwarnings("ignore", message=r"You are using a Python version .* which Google will stop supporting",
                          category=FutureWarning)
  root = std_logging.getLogger()
  if not any(isinstance(f, _GinIncludeNoise) for f in root.filters):
    root.addFilter(_GinIncludeNoise())
  _silence_gym_notice()
  _import_tensorflow_filtered()
  std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)


quiet_startup()
