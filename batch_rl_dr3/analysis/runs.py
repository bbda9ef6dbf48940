"""Read run folders written by `python -m batch_rl_dr3.train` (layout in batch_rl_dr3/runner.py).

A run folder is any folder holding `run_info.json` and `metrics.csv`; `config.gin`, `tensorboard/` and
`checkpoints/` are not read. `find_run_dirs` expands glob patterns (`runs/*`, `runs/**`, or a folder that
contains run folders at any depth). `load_runs` reads them all: a folder with a missing or broken file gets one
warning line naming the file and is skipped; a DataError is raised only when nothing usable is left.
"""
import csv
import dataclasses
import glob
import json
import math
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np

from batch_rl_dr3 import labels
from batch_rl_dr3.atari_games import canonical_game
from batch_rl_dr3.errors import ConfigError, DataError

RUN_INFO_FILE = "run_info.json"
METRICS_CSV = "metrics.csv"
DOMAINS = ("atari", "continuous")
_IGNORED_SUBDIRS = ("tensorboard", "checkpoints")


@dataclasses.dataclass
class Run:
  """One run folder: what was run (run_info.json) and its metric rows (metrics.csv), sorted by iteration."""
  path: str
  info: Dict[str, Any]
  metrics: Dict[str, np.ndarray]  # column -> float64 [num_iterations]; empty cells are NaN

  @property
  def domain(self) -> str:
    return self.info["domain"]

  @property
  def env(self) -> str:
    """The Atari game (canonical CamelCase) or the continuous task."""
    return self.info["game"] if self.domain == "atari" else self.info["task"]

  @property
  def label(self) -> str:
    return self.info["label"]

  @property
  def setting(self) -> str:
    return self.info["setting"]

  @property
  def seed(self) -> Optional[int]:
    return self.info.get("seed")

  @property
  def num_iterations(self) -> int:
    return len(self.metrics["iteration"])

  @property
  def gradient_steps(self) -> np.ndarray:
    return self.metrics["gradient_steps"]

  def column(self, name: str) -> Optional[np.ndarray]:
    return self.metrics.get(name)

  def has_finite(self, name: str) -> bool:
    values = self.metrics.get(name)
    return values is not None and bool(np.isfinite(values).any())


def is_remote(path: str) -> bool:
  """A URL (gs://, file://, ...): read through tf.io.gfile, which is imported only then (it is slow to import)."""
  return "://" in path


def _open_text(path: str):
  if not is_remote(path):
    return open(path, newline="")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(path)
  return tf.io.gfile.GFile(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def _normpath(path: str) -> str:
  return path.rstrip("/") if is_remote(path) else os.path.normpath(path)


def _read_run_info(path: str) -> Dict[str, Any]:
  info_path = os.path.join(path, RUN_INFO_FILE)
  try:
    with _open_text(info_path) as f:
      info = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{info_path}: missing (every run folder needs run_info.json and metrics.csv).") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{info_path}: not valid JSON ({e}).") from None
  if not isinstance(info, dict):
    raise DataError(f"{info_path}: expected a JSON object, got {type(info).__name__}.")
  domain = info.get("domain")
  if domain not in DOMAINS:
    raise DataError(f"{info_path}: 'domain' is {domain!r}; expected one of {DOMAINS}.")
  env_key = "game" if domain == "atari" else "task"
  if not isinstance(info.get(env_key), str) or not info[env_key]:
    raise DataError(f"{info_path}: a {domain} run needs a non-empty string {env_key!r}.")
  if domain == "atari":
    try:
      info["game"] = canonical_game(info["game"])
    except ConfigError as e:
      raise DataError(f"{info_path}: {e}") from None
  label = labels.label_from_run_info(info)
  if label is None:
    raise DataError(f"{info_path}: needs a 'label' (display name) or an 'agent'.")
  info["label"] = label
  # Continuous runs may have no data setting; they still group under one name.
  info["setting"] = str(info.get("setting") or "default")
  return info


def _parse_cell(text: str) -> float:
  text = text.strip()
  return math.nan if text == "" else float(text)


def _read_metrics(path: str) -> Dict[str, np.ndarray]:
  csv_path = os.path.join(path, METRICS_CSV)
  try:
    with _open_text(csv_path) as f:
      rows = list(csv.reader(f))
  except FileNotFoundError:
    raise DataError(f"{csv_path}: missing (every run folder needs run_info.json and metrics.csv).") from None
  except UnicodeDecodeError as e:
    raise DataError(f"{csv_path}: not a text CSV file ({e}).") from None
  if not rows:
    raise DataError(f"{csv_path}: empty; expected a header 'iteration,gradient_steps,...' and one row per "
                    f"iteration.")
  header, body = rows[0], [r for r in rows[1:] if r]
  for required in ("iteration", "gradient_steps"):
    if required not in header:
      raise DataError(f"{csv_path}: no {required!r} column in the header {header[:6]}...; expected "
                      f"'iteration,gradient_steps,<metric>,...'.")
  if not body:
    raise DataError(f"{csv_path}: has a header but no iteration rows yet.")
  values = np.empty((len(body), len(header)), dtype=np.float64)
  for line_number, row in enumerate(body, start=2):
    if len(row) != len(header):
      raise DataError(f"{csv_path}: line {line_number} has {len(row)} fields, the header has {len(header)} "
                      f"(truncated or corrupted file).")
    for j, cell in enumerate(row):
      try:
        values[line_number - 2, j] = _parse_cell(cell)
      except ValueError:
        raise DataError(f"{csv_path}: line {line_number}, column {header[j]!r}: {cell!r} is not a number.") \
            from None
  columns = {name: values[:, j] for j, name in enumerate(header)}
  iterations = columns["iteration"]
  if not np.all(np.isfinite(iterations)) or not np.all(np.isfinite(columns["gradient_steps"])):
    raise DataError(f"{csv_path}: empty 'iteration' or 'gradient_steps' cells; every row needs both.")
  order = np.argsort(iterations, kind="stable")
  if np.any(np.diff(iterations[order]) == 0):
    raise DataError(f"{csv_path}: the same iteration appears on more than one row.")
  return {name: column[order] for name, column in columns.items()}


def read_run(path: str) -> Run:
  """One run folder; DataError naming the file when run_info.json or metrics.csv is missing or broken."""
  return Run(path=_normpath(path), info=_read_run_info(path), metrics=_read_metrics(path))


def _is_run_candidate(path: str) -> bool:
  isfile = (lambda p: _gfile().exists(p) and not _gfile().isdir(p)) if is_remote(path) else os.path.isfile
  return isfile(os.path.join(path, RUN_INFO_FILE)) or isfile(os.path.join(path, METRICS_CSV))


def find_run_dirs(patterns: Iterable[str]) -> List[str]:
  """Folders holding run_info.json or metrics.csv, matched by the glob patterns or found below a match."""
  found = set()
  for pattern in patterns:
    remote = is_remote(pattern)
    # tf.io.gfile.glob has no recursive '**': a remote '**' is read as '*' (a match is then walked anyway).
    matches = (_gfile().glob(pattern.replace("**", "*")) if remote
               else glob.glob(os.path.expanduser(pattern), recursive=True))
    isdir, walk = (_gfile().isdir, _gfile().walk) if remote else (os.path.isdir, os.walk)
    for match in matches:
      if os.path.basename(match) in (RUN_INFO_FILE, METRICS_CSV):  # e.g. --runs='runs/*/metrics.csv'
        match = os.path.dirname(match) or "."
      if not isdir(match):
        continue
      if _is_run_candidate(match):
        found.add(_normpath(match))
        continue
      for root, dirs, _ in walk(match):
        if _is_run_candidate(root):
          found.add(_normpath(root))
          dirs[:] = []  # a run's own subfolders (tensorboard/, checkpoints/) hold no runs
        else:
          dirs[:] = [d for d in dirs if d not in _IGNORED_SUBDIRS]
  return sorted(found)


def _print_to_stderr(message: str) -> None:
  print(message, file=sys.stderr)


def load_runs(patterns: Iterable[str], warn: Callable[[str], None] = _print_to_stderr) -> List[Run]:
  """Every readable run under the patterns; broken folders are skipped with one warning line each."""
  patterns = list(patterns)
  runs = []
  for path in find_run_dirs(patterns):
    try:
      runs.append(read_run(path))
    except DataError as e:
      warn(f"WARNING: skipping run folder {path}: {e}")
  if not runs:
    raise DataError(f"No usable run folder (with {RUN_INFO_FILE} and {METRICS_CSV}) matches --runs="
                    f"{','.join(patterns)}.")
  return runs
