"""What the cloud launchers (xm_gcp.py, vertex.py, gke.py) share, in the standard library only.

Only the standard library and `launch.sweep` (itself standard library + the package's light modules) are
imported here, so a launcher can check its third-party requirements first and, when one is missing, print one
line saying what to install instead of a ModuleNotFoundError traceback.
"""
import argparse
import dataclasses
import hashlib
import importlib
import json
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
MULTI_SEED_GIN = "launch/gin/multi_seed.gin"


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
  if MULTI_SEED_GIN in run.gin_files:
    raise ConfigError(f"run {run.name}: {MULTI_SEED_GIN} and the data-parallel {gin_file} both choose the "
                      "experiment; several seeds per job are not offered on these launchers")
  args = list(args)
  last_gin_file = max((i for i, a in enumerate(args) if a.startswith("--gin_files=")), default=0)
  return args[:last_gin_file + 1] + [f"--gin_files={gin_file}"] + args[last_gin_file + 1:]


# ---------------------------------------------------------------------------------------------------------------
# Single-host TPU slices of the generations Vertex AI and GKE offer today: one run per 4-chip host, trained
# data-parallel over its chips by launch/gin/tpu.gin (TPUStrategy on the host's own TPU). Names from Google's
# docs: GKE "Plan TPUs in GKE" (cloud.google.com/kubernetes-engine/docs/concepts/plan-tpus: machine type,
# cloud.google.com/gke-tpu-accelerator value, topology) and Vertex AI "Configure compute resources for custom
# training" (cloud.google.com/vertex-ai/docs/training/configure-compute#tpu: the ct* machine types with
# machineSpec.tpuTopology); google-cloud-aiplatform 2.7.0's MachineSpec.tpu_topology docstring: "required for
# TPU v5 versions". Its AcceleratorType enum has TPU_V5_LITEPOD (v5e) but no v5p / v6e member: on Vertex the
# machine type carries the TPU, and accelerator_type stays unset for every generation here.
@dataclasses.dataclass(frozen=True)
class TpuSlice:
  generation: str        # 'v5e'
  machine_type: str      # one host's machine type (Vertex machineSpec.machineType, the GKE node pool's)
  gke_accelerator: str   # the node label cloud.google.com/gke-tpu-accelerator
  topology: str          # cloud.google.com/gke-tpu-topology / Vertex machineSpec.tpuTopology
  chips: int             # google.com/tpu resource of the pod: every chip of the host


TPU_SLICES = {
    "v4": TpuSlice("v4", "ct4p-hightpu-4t", "tpu-v4-podslice", "2x2x1", 4),
    "v5e": TpuSlice("v5e", "ct5lp-hightpu-4t", "tpu-v5-lite-podslice", "2x2", 4),
    "v5p": TpuSlice("v5p", "ct5p-hightpu-4t", "tpu-v5p-slice", "2x2x1", 4),
    "v6e": TpuSlice("v6e", "ct6e-standard-4t", "tpu-v6e-slice", "2x2", 4),
}
DRY_RUN_IMAGE = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/batch-rl-dr3:tpu"
RESUMABLE = ["python", "-m", "launch.resumable", "--"]


def tpu_slice(generation: str, offered: Sequence[str]) -> TpuSlice:
  if generation not in offered:
    raise ConfigError(f"--tpu={generation}; expected one of {', '.join(offered)}")
  return TPU_SLICES[generation]


@dataclasses.dataclass(frozen=True)
class CloudRun:
  """One run as a cloud job: its job name, folder, the container's command (the resumable wrapper and the entry
  point) and its arguments (the run's flags)."""
  run_name: str
  job_name: str
  base_dir: str
  command: List[str]
  args: List[str]


def cloud_runs(runs: Sequence[sweep_lib.Run], root: str, data_dir: Optional[str], *, where: str,
               max_name_length: int = 128, extra_gin_files: Sequence[str] = ()) -> List[CloudRun]:
  """Each run's command on a TPU host: `python -m launch.resumable -- python -m <entry> <flags> tpu.gin`."""
  check_gs_root(root, where)
  out = []
  for run in runs:
    if extra_gin_files:
      run = dataclasses.replace(run, gin_files=run.gin_files + tuple(extra_gin_files))
    args = with_parallel_gin(run, run.args(root, data_dir), TPU_GIN)
    out.append(CloudRun(run.name, job_name(run.name, max_name_length), run.base_dir(root),
                        RESUMABLE + ["python", "-m", run.entry_point], args))
  check_unique_names({r.run_name: r.job_name for r in out})
  return out


def argument_parser(prog: str, description: str, offered: Sequence[str]) -> argparse.ArgumentParser:
  """The flags vertex.py and gke.py share (sweep selection, TPU, image, spot, dry run, estimate)."""
  from launch import estimate as estimate_lib
  parser = argparse.ArgumentParser(prog=prog, description=description)
  parser.add_argument("--sweep", required=True, help="A sweep file, or a name under launch/sweeps/ (table1...).")
  parser.add_argument("--root", default=None, help="gs:// folder under which each run gets <root>/<run name>.")
  parser.add_argument("--data_dir", default=None, help="Dataset root (default: the sweep's default_data_dir, "
                      "for Atari gs://atari-replay-datasets/dqn).")
  parser.add_argument("--only", action="append", default=[], metavar="AXIS=LABEL[,LABEL]",
                      help="Keep the runs with these labels (repeatable).")
  parser.add_argument("--tpu", default="v5e", choices=list(offered), help="TPU generation: one single-host "
                      "4-chip slice per run.")
  parser.add_argument("--image", default=None, help="The training image built from launch/Dockerfile with "
                      "--build-arg ACCELERATOR=tpu and pushed (required unless --dry_run).")
  parser.add_argument("--spot", action="store_true", help="Spot TPUs (cheaper, preemptible): preempted runs "
                      "restart and resume from their checkpoints.")
  parser.add_argument("--gin_files", action="append", default=[], help="Extra gin files for every run, after "
                      "the sweep's (repeatable).")
  parser.add_argument("--dry_run", action="store_true", help="Build and print every request; no credentials, "
                      "no network.")
  estimate_lib.add_arguments(parser)
  return parser


def parse_args(launcher, argv: Sequence[str]) -> argparse.Namespace:
  """A cloud launcher's flags: the shared ones (argument_parser) and its own (launcher.add_arguments)."""
  module = launcher.PROGRAM.removesuffix(".py").replace("/", ".")
  parser = argument_parser(f"python -m {module}", launcher.__doc__.split("\n\n")[0], launcher.OFFERED)
  launcher.add_arguments(parser)
  return parser.parse_args(argv)


def launcher_main(launcher, argv: Optional[Sequence[str]] = None) -> int:
  """The flow of the cloud launchers: select runs; --estimate; build the SDK's requests; print or send them.

  `launcher` is the launcher's module: PROGRAM, REQUIREMENTS (import name -> pip package), WHERE (its name in
  messages), OFFERED (TPU generations), MAX_NAME (job name length), __doc__, add_arguments(parser) for its own
  flags, build(args, sweep_name, cloud_runs) -> requests, describe(requests) -> JSON-able and
  submit(args, requests).
  """
  args = parse_args(launcher, sys.argv[1:] if argv is None else argv)
  from launch import estimate as estimate_lib
  try:
    sweep, runs, data_dir = sweep_lib.load_selected(args.sweep, args.only, args.data_dir)
    if args.estimate:
      print(estimate_lib.report_from_args(args, sweep, runs, data_dir))
      return 0
    require(launcher.PROGRAM, launcher.REQUIREMENTS)
    if not args.dry_run and not args.image:
      raise ConfigError("--image is required: the image built from launch/Dockerfile with --build-arg "
                        "ACCELERATOR=tpu, pushed to Artifact Registry (launch/README.md)")
    jobs = cloud_runs(runs, args.root, data_dir, where=launcher.WHERE, max_name_length=launcher.MAX_NAME,
                      extra_gin_files=args.gin_files)
    requests = launcher.build(args, sweep.name, jobs)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  if args.dry_run:
    print(json.dumps(launcher.describe(requests), indent=1))
    print(f"# {len(jobs)} {launcher.WHERE} jobs of sweep {sweep.name} (dry run: nothing launched)", file=sys.stderr)
    return 0
  launcher.submit(args, requests)
  return 0
