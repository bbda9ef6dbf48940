r"""XManager launcher for Vertex AI on GCP: one Vertex AI custom job per run of a sweep.

    xmanager launch launch/xm_gcp.py -- --sweep=table1 --root=gs://MY_BUCKET/dr3 --accelerator=tpu_v3
    python launch/xm_gcp.py --sweep=smoke --root=gs://MY_BUCKET/dr3 --dry_run    # no credentials, no network

Every job runs the image built from launch/Dockerfile (staged with the repository's source files in a clean
build context; for TPU executors its ACCELERATOR build arg defaults to 'tpu'; python:3.11, the requirement files installed as the
Makefile does, the repository copied in; entry point `python -m launch.resumable -- python -m batch_rl_dr3.train`,
which exits 75 instead of 0 when a SIGTERM stopped the run before its end) with the run's flags:
`--base_dir=<root>/<run name>` on gs://, the dataset read directly from gs://atari-replay-datasets/dqn (the
sweep's default_data_dir, or --data_dir). Launching a sweep again starts jobs for every selected run; a
finished run exits at once (DONE) and an unfinished one resumes from its checkpoints in its base_dir. Use
--only to relaunch a subset.

Jobs with a TPU get `--gin_files=launch/gin/tpu.gin` (the data-parallel `DistributedAtariExperiment` over the
8 cores, batches from tf.data on the host); jobs with several GPUs get launch/gin/mirrored.gin.

Executors (--accelerator): tpu_v2 / tpu_v3 (a v2-8 / v3-8: accelerator_count 8 on Vertex's 'cloud-tpu'
machine), v100 / a100 / t4 / l4 GPUs (--accelerator_count of them), or cpu (--cpu vCPUs, --ram_gib GiB).
TPU v4 and newer are not offered: xmanager 0.8.5's Vertex backend maps only TPU v2 / v3 to Vertex machine
specs (`xmanager.cloud.vertex._CLOUD_TPU_ACCELERATOR_TYPES`); launch/vertex.py (Vertex AI, v5e / v5p / v6e) and
launch/gke.py (GKE, v4 / v5e / v5p / v6e) send the same runs to them. The one-time GCP set-up is in
launch/README.md.

--dry_run builds every job exactly as a launch would (xm.Job objects with the Vertex executor, and the Vertex
machine spec xmanager derives from them) and prints them, without touching GCP.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence
import warnings

# Run as a script by `xmanager launch`: make the repository importable.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# google-api-core warns at import that Python 3.11 support ends in 2027: not actionable for a launch.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")

from launch import cloud  # noqa: E402  (standard library only)

# Without the launch requirements: one line saying what to install, not a ModuleNotFoundError.
cloud.require("launch/xm_gcp.py", {"absl": "absl-py", "xmanager": "xmanager"})

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from xmanager import xm  # noqa: E402
from xmanager import xm_local  # noqa: E402
from xmanager.cloud import vertex  # noqa: E402
from xmanager.xm_local import executables as local_executables  # noqa: E402

from batch_rl_dr3.errors import ConfigError  # noqa: E402
from launch import estimate as estimate_lib  # noqa: E402
from launch import sweep as sweep_lib  # noqa: E402

DOCKERFILE = os.path.join(_REPO_ROOT, "launch", "Dockerfile")
# accelerator flag -> (xm resource name, default count)
ACCELERATORS = {
    "tpu_v2": ("tpu_v2", 8),
    "tpu_v3": ("tpu_v3", 8),
    "v100": ("v100", 1),
    "a100": ("a100", 1),
    "t4": ("t4", 1),
    "l4": ("l4", 1),
    "cpu": (None, 0),
}
_UNSUPPORTED_TPUS = ("tpu_v4", "tpu_v5e", "tpu_v5p", "tpu_v6e")
TPU_GIN = cloud.TPU_GIN
MIRRORED_GIN = cloud.MIRRORED_GIN
DRY_RUN_IMAGE = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/batch-rl-dr3:dry-run"

FLAGS = flags.FLAGS
flags.DEFINE_string("sweep", None, "Sweep file or name under launch/sweeps/ (table1, table2, brac_mujoco, smoke).")
flags.DEFINE_string("root", None, "gs:// folder under which each run gets <root>/<run name>.")
flags.DEFINE_string("data_dir", None, "Dataset root (default: the sweep's default_data_dir, for Atari "
                    "gs://atari-replay-datasets/dqn).")
flags.DEFINE_enum("accelerator", "tpu_v3", sorted(ACCELERATORS) + list(_UNSUPPORTED_TPUS), "Executor hardware.")
flags.DEFINE_integer("accelerator_count", None, "Accelerators per job (default: 8 TPU cores, 1 GPU).")
flags.DEFINE_integer("cpu", 8, "vCPUs per job (CPU and GPU executors).")
flags.DEFINE_integer("ram_gib", 64, "RAM per job in GiB (CPU and GPU executors); 10 % DQN Replay holds ~35 GB "
                     "of frames.")
flags.DEFINE_multi_string("only", [], "AXIS=LABEL[,LABEL]: launch only these runs (repeatable).")
flags.DEFINE_string("experiment_title", None, "XManager experiment title (default: the sweep name).")
flags.DEFINE_bool("dry_run", False, "Build and print every job spec; no GCP calls.")
flags.DEFINE_bool("estimate", False, "Print the sweep's gradient / evaluation steps and hours at the benchmarks' "
                  "rates and at --steps_per_second / --eval_steps_per_second; launch nothing (launch/estimate.py).")
flags.DEFINE_float("steps_per_second", None, "--estimate: a target train rate per run (gradient steps/s).")
flags.DEFINE_float("eval_steps_per_second", None, "--estimate: a target evaluation rate per run (agent steps/s).")
flags.DEFINE_string("benchmarks", estimate_lib.DEFAULT_BENCHMARKS, "--estimate: the measured rates "
                    "(benchmarks/run.py's results.json).")


@dataclasses.dataclass(frozen=True)
class JobSpec:
  """One run's Vertex job, as XManager will launch it."""
  run_name: str
  job_name: str
  args: List[str]
  requirements: xm.JobRequirements

  def executor(self) -> xm_local.Vertex:
    return xm_local.Vertex(requirements=self.requirements)

  def job(self, executable: xm.Executable) -> xm.Job:
    return xm.Job(executable=executable, executor=self.executor(), name=self.job_name, args=list(self.args))

  def machine_spec(self) -> Dict[str, object]:
    """The Vertex machine spec xmanager derives from the requirements (no GCP call)."""
    spec = vertex.get_machine_spec(self.job(local_executables.GoogleContainerRegistryImage(
        name="batch-rl-dr3", image_path=DRY_RUN_IMAGE)))
    if "accelerator_type" in spec:
      spec["accelerator_type"] = spec["accelerator_type"].name
    return spec


def job_requirements(accelerator: str, accelerator_count: Optional[int] = None, cpu: int = 8,
                     ram_gib: int = 64) -> xm.JobRequirements:
  """xm.JobRequirements of one job for an --accelerator value."""
  if accelerator in _UNSUPPORTED_TPUS:
    raise ConfigError(f"--accelerator={accelerator}: xmanager 0.8.5's Vertex AI backend launches TPU v2 / v3 only "
                      "(tpu_v2, tpu_v3 = a v3-8); for TPU v5e / v5p / v6e use launch/vertex.py (Vertex AI) or "
                      "launch/gke.py (GKE, also v4)")
  if accelerator not in ACCELERATORS:
    raise ConfigError(f"--accelerator={accelerator}; expected one of {sorted(ACCELERATORS)}")
  resource, default_count = ACCELERATORS[accelerator]
  if resource is None:
    return xm.JobRequirements(cpu=cpu, ram=ram_gib * xm.GiB)
  count = default_count if accelerator_count is None else accelerator_count
  if resource.startswith("tpu") and count != 8:
    raise ConfigError(f"--accelerator_count={count} with {accelerator}: Vertex AI offers {accelerator} as a "
                      f"v{resource[-1]}-8 (8 cores)")
  if resource.startswith("tpu"):
    return xm.JobRequirements(**{resource: count})
  return xm.JobRequirements(cpu=cpu, ram=ram_gib * xm.GiB, **{resource: count})


job_name = cloud.job_name


def _job_args(run: sweep_lib.Run, root: str, data_dir: Optional[str], requirements: xm.JobRequirements) -> List[str]:
  """The run's arguments, plus the data-parallel gin file when the job has a TPU or several GPUs."""
  args = run.args(root, data_dir)
  accelerator = requirements.accelerator
  replicas = requirements.task_requirements.get(accelerator, 0) if accelerator is not None else 0
  if accelerator in xm.TpuType:
    return cloud.with_parallel_gin(run, args, TPU_GIN)
  if replicas > 1:
    return cloud.with_parallel_gin(run, args, MIRRORED_GIN)
  return args


def build_job_specs(sweep: sweep_lib.Sweep, runs: Sequence[sweep_lib.Run], root: str, *,
                    data_dir: Optional[str] = None, accelerator: str = "tpu_v3",
                    accelerator_count: Optional[int] = None, cpu: int = 8, ram_gib: int = 64) -> List[JobSpec]:
  """One JobSpec per run; checks that root is on gs:// and that the job names are unique."""
  cloud.check_gs_root(root, "Vertex AI")
  data_dir = data_dir or sweep.default_data_dir
  requirements = job_requirements(accelerator, accelerator_count, cpu, ram_gib)
  specs = [JobSpec(run.name, job_name(run.name), _job_args(run, root, data_dir, requirements), requirements)
           for run in runs]
  cloud.check_unique_names({spec.run_name: spec.job_name for spec in specs})
  return specs


def dockerfile_text(accelerator: str) -> str:
  """launch/Dockerfile with its ACCELERATOR build arg defaulting to 'tpu' for TPU executors.

  XManager passes no build args, so the TPU image (TensorFlow's TPU build) gets its own Dockerfile text.
  """
  text = open(DOCKERFILE).read()
  if accelerator.startswith("tpu"):
    if "ARG ACCELERATOR=cpu" not in text:
      raise ConfigError(f"{DOCKERFILE}: expected an 'ARG ACCELERATOR=cpu' line to switch to the TPU build")
    text = text.replace("ARG ACCELERATOR=cpu", "ARG ACCELERATOR=tpu")
  return text


def _tracked_files() -> List[str]:
  """The repository's files as git lists them (tracked + untracked, not ignored); a walk without git."""
  try:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=_REPO_ROOT,
                            check=True, capture_output=True, text=True).stdout.splitlines()
    return [f for f in listed if os.path.isfile(os.path.join(_REPO_ROOT, f))]
  except (OSError, subprocess.CalledProcessError):
    skip = {".git", ".venv", "runs", "quickstart_out", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(_REPO_ROOT):
      subfolders[:] = [d for d in subfolders if d not in skip and not d.endswith(".egg-info")]
      files += [os.path.relpath(os.path.join(folder, n), _REPO_ROOT) for n in names]
    return files


def stage_build_context(accelerator: str, directory: str) -> xm.Dockerfile:
  """Copies the repository's source files and the generated Dockerfile into `directory`: the image's context.

  A staged context keeps the virtualenv, runs and caches out of the image whichever way XManager builds it
  (docker buildx, the docker Python client, or Cloud Build, which uploads the whole context).
  """
  for relative in _tracked_files():
    if relative.startswith(("runs/", "quickstart_out/", ".venv/")):
      continue
    target = os.path.join(directory, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(_REPO_ROOT, relative), target)
  dockerfile = os.path.join(directory, "Dockerfile")
  with open(dockerfile, "w") as f:
    f.write(dockerfile_text(accelerator))
  return xm.Dockerfile(path=directory, dockerfile=dockerfile)


def describe(spec: JobSpec) -> Dict[str, object]:
  return {"run": spec.run_name, "job_name": spec.job_name, "executor": "Vertex",
          "machine_spec": spec.machine_spec(), "args": spec.args}


def main(argv):
  del argv
  try:
    if not FLAGS.sweep:
      raise ConfigError("--sweep is required (a file, or one of table1, table2, brac_mujoco, smoke)")
    sweep = sweep_lib.load_sweep(FLAGS.sweep)
    runs = sweep.select(sweep_lib.parse_only(FLAGS.only))
    if FLAGS.estimate:
      print(estimate_lib.report(sweep, runs, data_dir=FLAGS.data_dir or sweep.default_data_dir,
                                benchmarks=FLAGS.benchmarks, steps_per_second=FLAGS.steps_per_second,
                                eval_steps_per_second=FLAGS.eval_steps_per_second))
      return 0
    specs = build_job_specs(sweep, runs, FLAGS.root, data_dir=FLAGS.data_dir, accelerator=FLAGS.accelerator,
                            accelerator_count=FLAGS.accelerator_count, cpu=FLAGS.cpu, ram_gib=FLAGS.ram_gib)
    if FLAGS.dry_run:
      described = [describe(spec) for spec in specs]  # machine specs are checked here, before any output
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if FLAGS.dry_run:
    print(json.dumps({"sweep": sweep.name, "dockerfile": DOCKERFILE, "build_context": _REPO_ROOT,
                      "jobs": described}, indent=1))
    print(f"# {len(specs)} Vertex AI jobs (dry run: nothing launched)", file=sys.stderr)
    return 0
  with tempfile.TemporaryDirectory(prefix="batch_rl_dr3_image_") as context, \
      xm_local.create_experiment(experiment_title=FLAGS.experiment_title or sweep.name) as experiment:
    [executable] = experiment.package([xm.Packageable(
        executable_spec=stage_build_context(FLAGS.accelerator, context), executor_spec=xm_local.Vertex.Spec())])
    for spec in specs:
      experiment.add(spec.job(executable))
  print(f"Launched {len(specs)} jobs of sweep {sweep.name}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
