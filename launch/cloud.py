"""What the cloud launchers (xm_gcp.py, vertex.py, gke.py) share, in the standard library only.

Only the standard library and `launch.sweep` (itself standard library + the package's light modules) are
imported here, so a launcher can check its third-party requirements first and, when one is missing, print one
line saying what to install instead of a ModuleNotFoundError traceback.
"""
import hashlib
import importlib
import re
import sys
from typing import List, Mapping, Optional, Sequence

from batch_rl_dr3.errors import ConfigError
from launch import sweep as sweep_lib

INSTALL_HINT = "pip install -r requirements.txt -r requirements-launch.txt"
EXIT_BAD_INPUT = 2
# Relative to the image's working directory, the repository root (train.py resolves gin files from there first).
TPU_GIN = "launch/gin/tpu.gin"
MIRRORED_GIN = "launch/gin/mirrored.gin"


def missing_requirements(modules: Mapping[str, str]) -> List[str]:
  """The pip packages (values) of the modules (keys, import names) that cannot be imported, in order."""
  missing = []
  for module, package in modules.items():
    try:
      importlib.import_module(module)
    except ImportError:
      missing.append(package)
  return missing


def missing_requirements_line(program: str, modules: Mapping[str, str]) -> Optional[str]:
  """One line naming what `program` needs and how to install it, or None when everything imports."""
  missing = missing_requirements(modules)
  if not missing:
    return None
  return f"error: {program} needs {', '.join(missing)}, not installed here: {INSTALL_HINT}"


def require(program: str, modules: Mapping[str, str]) -> None:
  """Exits with one line on stderr (exit code 2) when one of `modules` cannot be imported."""
  line = missing_requirements_line(program, modules)
  if line:
    print(line, file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def job_name(run_name: str, max_length: int = 128) -> str:
  """A cloud-safe job name for a run: lower-case letters, digits and '-' ('+' becomes 'plus', '/' '--').

  Names longer than `max_length` (63 for Kubernetes objects) keep their start and end a hash of the full
  name, so they stay unique and stable.
  """
  name = run_name.lower().replace("+", "-plus-").replace("/", "--")
  name = re.sub(r"[^a-z0-9-]+", "-", name)
  name = re.sub(r"-{3,}", "--", name).strip("-")
  if len(name) > max_length:
    digest = hashlib.sha1(run_name.encode()).hexdigest()[:8]
    name = name[:max_length - 9].rstrip("-") + "-" + digest
  return name


def check_unique_names(names: Mapping[str, str]) -> None:
  """names: run name -> job name; ConfigError when two runs get one job name."""
  seen = {}
  for run_name, name in names.items():
    if name in seen:
      raise ConfigError(f"runs {seen[name]} and {run_name} get the same job name {name}")
    seen[name] = run_name


def check_gs_root(root: Optional[str], where: str = "cloud") -> None:
  if not root or not root.startswith("gs://"):
    raise ConfigError(f"--root={root!r}: {where} jobs write their runs to Cloud Storage; expected gs://BUCKET/...")


def with_parallel_gin(run: sweep_lib.Run, args: Sequence[str], gin_file: str) -> List[str]:
  """The run's arguments with a data-parallel gin file (launch/gin/) after the sweep's own gin files."""
  if "game" not in dict(run.flags):
    raise ConfigError(f"run {run.name}: only the Atari path has a data-parallel step (launch/gin/); run the "
                      "continuous sweeps on one GPU or on CPUs")
  args = list(args)
  last_gin_file = max((i for i, a in enumerate(args) if a.startswith("--gin_files=")), default=0)
  return args[:last_gin_file + 1] + [f"--gin_files={gin_file}"] + args[last_gin_file + 1:]
