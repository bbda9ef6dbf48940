r"""Sweeps as data: a TOML file (stdlib `tomllib`) names a grid; `load_sweep` expands it into runs.

A run is one training command of the entry point (`python -m batch_rl_dr3.train` by default) with its own
`--base_dir = <root>/<run name>`. The run name is the sweep name followed by one label per axis, in the order
of `axes`, e.g. `table1/1pct/cql_qr+dr3/Pong/seed0`: readable, filesystem- and gs://-safe, unique, and stable
(it depends only on the grid point), so launching a sweep again finds each run's folder, skips finished runs
(`DONE` present) and resumes the others (the entry point resumes from its checkpoints).

File format (every key is checked: an unknown key is one ConfigError naming the file and the key):

    name = "table1"                          # required: first component of every run name
    description = "..."                      # optional, free text
    entry_point = "batch_rl_dr3.train"       # optional: the module run as `python -m <entry_point>`
    axes = ["setting", "agent", "game", "seed"]   # required: the grid's axes, in run-name order
    gin_order = ["agent", "setting", "game", "seed"]  # optional: the order in which the axes' gin files,
                                             # bindings and flags are passed (default: `axes`); gin's last
                                             # binding wins, so e.g. a data-setting file that overrides the
                                             # agent file's CQL alpha must come after it
    gin_files = ["..."]                      # optional: for every run (before the axes' files)
    gin_bindings = ["..."]                   # optional: for every run (before the axes' bindings)
    default_data_dir = "gs://..."            # optional: what ${data_dir} is when the launcher gets none
    [flags]                                  # optional: entry-point flags for every run, e.g. run = 1
    data_dir = "${data_dir}"

    # An axis is EITHER a list of values passed through one flag or one gin binding ...
    [axis.game]
    flag = "game"                                        # each value becomes --game=<value>
    values = "batch_rl_dr3.atari_games.DR3_PAPER_GAMES"  # a list, or the dotted name of a list in the package
    [axis.seed]
    flag = "seed"
    values = [0, 1, 2]                                   # integer labels get the axis name: seed0, seed1
    [axis.task]
    binding = "ContinuousExperiment.task"                # each value becomes `<binding> = '<value>'`
    values = ["kitchen-mixed-v0"]
    [axis.c0]
    binding = "DR3.coefficient"                          # float labels get the axis name: c0_0.001
    values = [0.001, 0.01]

    # ... OR named points, each with its own gin files, bindings and flags.
    [axis.agent.points."cql_qr+dr3"]
    gin_files = ["atari/cql_qr.gin", "atari/dr3.gin"]
    gin_bindings = []
    flags = {}

`${data_dir}` in a binding or flag value is replaced by the launcher's --data_dir (or `default_data_dir`).
Gin files are paths relative to `gin_configs/` (as the entry point resolves them) and must exist. A `game`
flag axis is checked against the 60 DQN Replay games (`batch_rl_dr3.atari_games`) and uses their canonical
spelling.
"""
import dataclasses
import importlib
import os
import re
import tomllib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from batch_rl_dr3 import GIN_CONFIG_DIR
from batch_rl_dr3 import REPO_ROOT
from batch_rl_dr3 import atari_games
from batch_rl_dr3.errors import ConfigError

SWEEP_DIR = os.path.join(REPO_ROOT, "launch", "sweeps")
DONE_FILE = "DONE"
DATA_DIR_PLACEHOLDER = "${data_dir}"
DEFAULT_ENTRY_POINT = "batch_rl_dr3.train"

_TOP_KEYS = ("name", "description", "entry_point", "axes", "gin_order", "gin_files", "gin_bindings", "default_data_dir",
             "flags", "axis")
_VALUE_AXIS_KEYS = ("flag", "binding", "values")
_POINT_KEYS = ("gin_files", "gin_bindings", "flags")
# Labels become path components locally and on gs://: letters, digits and . _ + - only.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_FLAG = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Run:
  """One grid point: its stable name and what its command passes to the entry point."""
  name: str                                # e.g. 'table1/1pct/cql_qr+dr3/Pong/seed0'
  point: Tuple[Tuple[str, str], ...]       # ((axis, label), ...) in axis order
  entry_point: str
  gin_files: Tuple[str, ...]
  gin_bindings: Tuple[str, ...]
  flags: Tuple[Tuple[str, str], ...]       # ((flag name, value as text), ...)

  @property
  def labels(self) -> Dict[str, str]:
    return dict(self.point)

  def base_dir(self, root: str) -> str:
    """The run's folder under `root` (a local path or a gs:// URL; '/'-joined either way)."""
    return root.rstrip("/") + "/" + self.name

  def uses_data_dir(self) -> bool:
    return any(DATA_DIR_PLACEHOLDER in text for text in self.gin_bindings + tuple(v for _, v in self.flags))

  def args(self, root: str, data_dir: Optional[str] = None) -> List[str]:
    """The entry point's arguments (after `python -m <entry_point>`), with ${data_dir} filled in."""
    if self.uses_data_dir() and not data_dir:
      raise ConfigError(f"run {self.name}: its sweep uses ${{data_dir}}; pass --data_dir (the dataset root)")
    fill = lambda text: text.replace(DATA_DIR_PLACEHOLDER, (data_dir or "").rstrip("/"))
    args = [f"--base_dir={self.base_dir(root)}"]
    args += [f"--gin_files={path}" for path in self.gin_files]
    args += [f"--gin_bindings={fill(binding)}" for binding in self.gin_bindings]
    args += [f"--{flag}={fill(value)}" for flag, value in self.flags]
    return args

  def command(self, root: str, data_dir: Optional[str] = None, python: str = "python") -> List[str]:
    return [python, "-m", self.entry_point] + self.args(root, data_dir)


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  description: str
  path: str
  axes: Tuple[str, ...]
  default_data_dir: Optional[str]
  runs: Tuple[Run, ...]

  def select(self, only: Mapping[str, Iterable[str]]) -> List[Run]:
    """The runs whose label on each given axis is one of the given labels (e.g. {'game': ['Pong']})."""
    wanted = {axis: set(labels) for axis, labels in only.items()}
    for axis, labels in wanted.items():
      if axis not in self.axes:
        raise ConfigError(f"--only {axis}=...: sweep {self.name} has no axis {axis!r}; its axes: "
                          f"{', '.join(self.axes)}")
      known = {run.labels[axis] for run in self.runs}
      unknown = sorted(labels - known)
      if unknown:
        raise ConfigError(f"--only {axis}={','.join(unknown)}: not a label of axis {axis!r} of sweep "
                          f"{self.name}; its labels: {', '.join(sorted(known))}")
    return [run for run in self.runs if all(run.labels[a] in ls for a, ls in wanted.items())]


def load_selected(path: str, only_specs: Sequence[str], data_dir: Optional[str] = None
                  ) -> Tuple[Sweep, List[Run], Optional[str]]:
  """A launcher's --sweep, --only and --data_dir: the sweep, its selected runs, and the data dir (default: the
  sweep's default_data_dir)."""
  sweep = load_sweep(path)
  return sweep, sweep.select(parse_only(only_specs)), data_dir or sweep.default_data_dir


def parse_only(specs: Sequence[str]) -> Dict[str, List[str]]:
  """['game=Pong,Breakout', 'seed=seed0'] -> {'game': ['Pong', 'Breakout'], 'seed': ['seed0']}."""
  only: Dict[str, List[str]] = {}
  for spec in specs:
    axis, sep, labels = spec.partition("=")
    if not sep or not axis.strip() or not labels.strip():
      raise ConfigError(f"--only {spec!r}: expected AXIS=LABEL[,LABEL...], e.g. game=Pong,Breakout")
    only.setdefault(axis.strip(), []).extend(l.strip() for l in labels.split(",") if l.strip())
  return only


def resolve_sweep_path(path: str) -> str:
  """A sweep file as given, else under launch/sweeps/ (with or without '.toml')."""
  for candidate in (path, os.path.join(SWEEP_DIR, path), os.path.join(SWEEP_DIR, path + ".toml")):
    if os.path.isfile(candidate):
      return candidate
  shipped = sorted(f for f in os.listdir(SWEEP_DIR) if f.endswith(".toml")) if os.path.isdir(SWEEP_DIR) else []
  raise ConfigError(f"--sweep={path}: no such file (also looked in {SWEEP_DIR}; shipped: {', '.join(shipped)})")


class _Checker:
  """Type and key checks whose errors all name the sweep file and the key path."""

  def __init__(self, path: str):
    self.path = path

  def fail(self, key: str, message: str):
    raise ConfigError(f"{self.path}: {key}: {message}")

  def keys(self, table, allowed: Sequence[str], where: str):
    if not isinstance(table, dict):
      self.fail(where, f"expected a table, got {table!r}")
    for key in table:
      if key not in allowed:
        self.fail(f"{where}.{key}" if where else key,
                  f"unknown key (expected one of {', '.join(sorted(allowed))})")

  def strings(self, value, key: str) -> Tuple[str, ...]:
    if value is None:
      return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      self.fail(key, f"expected a list of strings, got {value!r}")
    return tuple(value)

  def flags(self, value, key: str) -> Tuple[Tuple[str, str], ...]:
    if value is None:
      return ()
    if not isinstance(value, dict):
      self.fail(key, f"expected a table of flag = value, got {value!r}")
    out = []
    for flag, flag_value in value.items():
      if not _FLAG.match(flag) or flag in ("base_dir", "gin_files", "gin_bindings"):
        self.fail(f"{key}.{flag}", "not a flag a sweep may set (base_dir, gin_files and gin_bindings are set "
                  "by the sweep itself; flags are lower_snake_case)")
      if not isinstance(flag_value, (str, int, float, bool)):
        self.fail(f"{key}.{flag}", f"expected a string or number, got {flag_value!r}")
      out.append((flag, _flag_text(flag_value)))
    return tuple(out)

  def gin_files(self, value, key: str) -> Tuple[str, ...]:
    files = self.strings(value, key)
    for path in files:
      if not (os.path.isfile(os.path.join(GIN_CONFIG_DIR, path)) or os.path.isfile(os.path.join(REPO_ROOT, path))):
        self.fail(key, f"gin file {path!r} not found under {GIN_CONFIG_DIR}")
    return files

  def label(self, label: str, key: str) -> str:
    if not _LABEL.match(label):
      self.fail(key, f"label {label!r} is not filesystem-safe (letters, digits and . _ + - only)")
    return label


def _flag_text(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def _named_list(name: str, check: _Checker, key: str) -> list:
  """The list a dotted name refers to, e.g. 'batch_rl_dr3.atari_games.DR3_PAPER_GAMES'."""
  module_name, _, attribute = name.rpartition(".")
  if not module_name.startswith("batch_rl_dr3"):
    check.fail(key, f"{name!r}: expected a list, or the dotted name of a list in the batch_rl_dr3 package "
               "(e.g. 'batch_rl_dr3.atari_games.DR3_PAPER_GAMES')")
  try:
    value = getattr(importlib.import_module(module_name), attribute)
  except (ImportError, AttributeError):
    check.fail(key, f"{name!r} does not name anything in the package")
  if not isinstance(value, (list, tuple)):
    check.fail(key, f"{name!r} is not a list")
  return list(value)


@dataclasses.dataclass(frozen=True)
class _Point:
  label: str
  gin_files: Tuple[str, ...] = ()
  gin_bindings: Tuple[str, ...] = ()
  flags: Tuple[Tuple[str, str], ...] = ()


def _value_axis(axis: str, table: dict, check: _Checker) -> List[_Point]:
  where = f"axis.{axis}"
  check.keys(table, _VALUE_AXIS_KEYS, where)
  if ("flag" in table) == ("binding" in table):
    check.fail(where, "a value axis needs exactly one of 'flag' or 'binding' (or use 'points')")
  values = table.get("values")
  if isinstance(values, str):
    values = _named_list(values, check, f"{where}.values")
  if not isinstance(values, list) or not values:
    check.fail(f"{where}.values", f"expected a non-empty list, got {values!r}")
  points = []
  for value in values:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
      check.fail(f"{where}.values", f"expected strings or numbers, got {value!r}")
    if isinstance(value, float) and "flag" in table:
      check.fail(f"{where}.values", f"a flag axis takes strings or integers, got {value!r}")
    if "flag" in table:
      flag = table["flag"]
      if not isinstance(flag, str) or not _FLAG.match(flag):
        check.fail(f"{where}.flag", f"expected a flag name, got {flag!r}")
      if flag == "game":
        try:
          value = atari_games.canonical_game(value)
        except ConfigError as e:
          check.fail(f"{where}.values", str(e))
      label = f"{axis}{value}" if isinstance(value, int) else str(value)
      points.append(_Point(check.label(label, f"{where}.values"), flags=((flag, _flag_text(value)),)))
    else:
      binding = table["binding"]
      if not isinstance(binding, str) or not binding.strip():
        check.fail(f"{where}.binding", f"expected a gin parameter name, got {binding!r}")
      label = f"{axis}{value}" if isinstance(value, int) else (
          f"{axis}_{value!r}" if isinstance(value, float) else str(value))
      points.append(_Point(check.label(label, f"{where}.values"), gin_bindings=(f"{binding} = {value!r}",)))
  return points


def _points_axis(axis: str, table: dict, check: _Checker) -> List[_Point]:
  where = f"axis.{axis}"
  check.keys(table, ("points",), where)
  points_table = table["points"]
  if not isinstance(points_table, dict) or not points_table:
    check.fail(f"{where}.points", "expected a non-empty table of named points")
  points = []
  for label, spec in points_table.items():
    key = f"{where}.points.{label}"
    check.label(label, key)
    check.keys(spec, _POINT_KEYS, key)
    points.append(_Point(label, check.gin_files(spec.get("gin_files"), f"{key}.gin_files"),
                         check.strings(spec.get("gin_bindings"), f"{key}.gin_bindings"),
                         check.flags(spec.get("flags"), f"{key}.flags")))
  return points


def load_sweep(path: str) -> Sweep:
  """Reads, checks and expands a sweep file (a path, or a name under launch/sweeps/)."""
  path = resolve_sweep_path(path)
  check = _Checker(path)
  try:
    with open(path, "rb") as f:
      spec = tomllib.load(f)
  except tomllib.TOMLDecodeError as e:
    raise ConfigError(f"{path}: not valid TOML: {e}") from None
  check.keys(spec, _TOP_KEYS, "")
  name = spec.get("name")
  if not isinstance(name, str) or not name:
    check.fail("name", f"required: a non-empty string, got {name!r}")
  check.label(name, "name")
  entry_point = spec.get("entry_point", DEFAULT_ENTRY_POINT)
  if not isinstance(entry_point, str) or not re.match(r"^[A-Za-z_][\w.]*$", entry_point):
    check.fail("entry_point", f"expected a module name, got {entry_point!r}")
  default_data_dir = spec.get("default_data_dir")
  if default_data_dir is not None and not isinstance(default_data_dir, str):
    check.fail("default_data_dir", f"expected a string, got {default_data_dir!r}")
  axes = spec.get("axes")
  if not isinstance(axes, list) or not axes or not all(isinstance(a, str) for a in axes):
    check.fail("axes", f"required: a non-empty list of axis names, got {axes!r}")
  if len(set(axes)) != len(axes):
    check.fail("axes", f"an axis is listed twice: {axes}")
  gin_order = spec.get("gin_order", axes)
  if not isinstance(gin_order, list) or sorted(gin_order) != sorted(axes):
    check.fail("gin_order", f"expected the axes {axes} in some order, got {gin_order!r}")
  axis_tables = spec.get("axis", {})
  check.keys(axis_tables, axes, "axis")
  axis_points: List[List[_Point]] = []
  for axis in axes:
    check.label(axis, "axes")
    table = axis_tables.get(axis)
    if table is None:
      check.fail(f"axis.{axis}", "missing: every name in 'axes' needs its [axis.<name>] table")
    points = _points_axis(axis, table, check) if "points" in table else _value_axis(axis, table, check)
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
      check.fail(f"axis.{axis}", f"labels repeat: {labels}")
    axis_points.append(points)

  common = _Point("", check.gin_files(spec.get("gin_files"), "gin_files"),
                  check.strings(spec.get("gin_bindings"), "gin_bindings"), check.flags(spec.get("flags"), "flags"))
  runs = [_make_run(name, entry_point, axes, gin_order, common, combo) for combo in _product(axis_points)]
  for run in runs:
    _check_no_flag_twice(run, check)
  return Sweep(name, spec.get("description", ""), path, tuple(axes), default_data_dir, tuple(runs))


def _product(axis_points: List[List[_Point]]):
  if not axis_points:
    yield ()
    return
  for head in axis_points[0]:
    for tail in _product(axis_points[1:]):
      yield (head,) + tail


def _make_run(name: str, entry_point: str, axes: Sequence[str], gin_order: Sequence[str], common: _Point,
              combo: Tuple[_Point, ...]) -> Run:
  by_axis = dict(zip(axes, combo))
  parts = (common,) + tuple(by_axis[axis] for axis in gin_order)
  return Run(
      name="/".join([name] + [p.label for p in combo]),
      point=tuple((axis, p.label) for axis, p in zip(axes, combo)),
      entry_point=entry_point,
      gin_files=tuple(f for p in parts for f in p.gin_files),
      gin_bindings=tuple(b for p in parts for b in p.gin_bindings),
      flags=tuple(fl for p in parts for fl in p.flags))


def _check_no_flag_twice(run: Run, check: _Checker) -> None:
  seen = set()
  for flag, _ in run.flags:
    if flag in seen:
      check.fail("flags", f"run {run.name} would get --{flag} twice (set it in one place only)")
    seen.add(flag)


def is_remote(path: str) -> bool:
  """A URL such as gs://bucket/dir (read through tf.io.gfile) rather than a local path."""
  return "://" in path and not path.startswith("file://")


def run_status(base_dir: str) -> str:
  """'done' (DONE written), 'started' (folder exists: will resume) or 'new'; local paths or gs:// URLs."""
  if is_remote(base_dir):
    import tensorflow as tf  # only for remote roots: gs:// goes through tf.io.gfile, as in the runner
    exists, isdir = tf.io.gfile.exists, tf.io.gfile.isdir
  else:
    exists, isdir = os.path.exists, os.path.isdir
  if exists(base_dir.rstrip("/") + "/" + DONE_FILE):
    return "done"
  return "started" if isdir(base_dir) else "new"
