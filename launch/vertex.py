r"""Sends a sweep to Vertex AI custom jobs on TPU v5e / v5p / v6e: one job per run, through google-cloud-aiplatform.

    python -m launch.vertex --sweep=table1 --root=gs://MY_BUCKET/dr3 --tpu=v5e --spot \
        --image=us-central1-docker.pkg.dev/MY_PROJECT/batch-rl-dr3/trainer:tpu --project=MY_PROJECT
    python -m launch.vertex --sweep=table1 --root=gs://MY_BUCKET/dr3 --tpu=v6e --dry_run   # no credentials
    python -m launch.vertex --sweep=table1 --estimate --steps_per_second=400

xmanager 0.8.5 (launch/xm_gcp.py) maps only TPU v2 / v3 to Vertex machine specs; this launcher builds the
Vertex API's own request objects (`google.cloud.aiplatform_v1.CreateCustomJobRequest`) and sends them with its
`JobServiceClient`. Each job: one worker pool of one replica on a single-host 4-chip slice (machine type and
topology from `launch.cloud.TPU_SLICES`), the container's command

    python -m launch.resumable -- python -m batch_rl_dr3.train --base_dir=<root>/<run name> ... \
        --gin_files=launch/gin/tpu.gin

(the run's flags, then the data-parallel TPU gin file), and a scheduling policy for resumable runs:
`restart_job_on_worker_restart = True` with retries left on (`disable_retries = False`), so a worker restarted
by maintenance or a spot preemption restarts the command, which resumes from the checkpoint in --base_dir;
`strategy = SPOT` with --spot, else STANDARD; `timeout` --timeout_hours (Vertex's default 7 days). A run's
folder stays its own across attempts and launches: launching the sweep again skips runs with DONE (checked on
gs://) and starts the others, which resume. The image is launch/Dockerfile built with ACCELERATOR=tpu
(tensorflow-tpu and libtpu; see launch/README.md).
"""
import os
import sys
from typing import Dict, List
import warnings

from launch import cloud

# google-api-core warns at import that Python 3.11 support ends in 2027: not actionable for a launch.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")

PROGRAM = "launch/vertex.py"
REQUIREMENTS = {"google.cloud.aiplatform_v1": "google-cloud-aiplatform"}
OFFERED = ("v5e", "v5p", "v6e")
WHERE = "Vertex AI"
MAX_NAME = 128  # CustomJob.display_name


def _api():
  from google.cloud import aiplatform_v1
  return aiplatform_v1


def custom_job(job: cloud.CloudRun, *, tpu: cloud.TpuSlice, image: str, spot: bool, timeout_hours: float,
               service_account: str = "", labels: Dict[str, str] = None):
  """The run's `aiplatform_v1.CustomJob`."""
  api = _api()
  from google.protobuf import duration_pb2
  pool = api.WorkerPoolSpec(
      machine_spec=api.MachineSpec(machine_type=tpu.machine_type, tpu_topology=tpu.topology),
      replica_count=1,
      container_spec=api.ContainerSpec(image_uri=image, command=job.command, args=job.args),
      disk_spec=api.DiskSpec(boot_disk_type="pd-ssd", boot_disk_size_gb=100))
  scheduling = api.Scheduling(
      strategy=api.Scheduling.Strategy.SPOT if spot else api.Scheduling.Strategy.STANDARD,
      restart_job_on_worker_restart=True, disable_retries=False,
      timeout=duration_pb2.Duration(seconds=int(timeout_hours * 3600)))
  spec = api.CustomJobSpec(worker_pool_specs=[pool], scheduling=scheduling, service_account=service_account,
                           base_output_directory=api.GcsDestination(output_uri_prefix=job.base_dir))
  return api.CustomJob(display_name=job.job_name, job_spec=spec, labels=dict(labels or {}))


def build(args, sweep_name: str, jobs: List[cloud.CloudRun]):
  """One `CreateCustomJobRequest` per run (no network)."""
  api = _api()
  if args.timeout_hours <= 0:
    raise cloud.ConfigError(f"--timeout_hours={args.timeout_hours}; expected > 0")
  if not args.dry_run and not args.project:
    raise cloud.ConfigError("--project is required to launch (or set GOOGLE_CLOUD_PROJECT)")
  tpu = cloud.tpu_slice(args.tpu, OFFERED)
  parent = f"projects/{args.project or 'PROJECT'}/locations/{args.region}"
  labels = {"sweep": cloud.job_name(sweep_name, 63), "tpu": tpu.generation}
  return [api.CreateCustomJobRequest(parent=parent, custom_job=custom_job(
      job, tpu=tpu, image=args.image or cloud.DRY_RUN_IMAGE, spot=args.spot, timeout_hours=args.timeout_hours,
      service_account=args.service_account, labels=labels)) for job in jobs]


def describe(requests) -> list:
  import json
  api = _api()
  return [json.loads(api.CreateCustomJobRequest.to_json(r, use_integers_for_enums=False,
                                                         always_print_fields_with_no_presence=False))
          for r in requests]


def submit(args, requests) -> None:
  """Skips runs whose folder has DONE; creates the other jobs."""
  api = _api()
  from launch import resumable
  client = api.JobServiceClient(client_options={"api_endpoint": f"{args.region}-aiplatform.googleapis.com"})
  created = skipped = 0
  for request in requests:
    base_dir = request.custom_job.job_spec.base_output_directory.output_uri_prefix
    if resumable.done_exists(base_dir):
      skipped += 1
      continue
    job = client.create_custom_job(request=request)
    created += 1
    print(f"created {job.name}  {request.custom_job.display_name}", flush=True)
  print(f"{created} Vertex AI jobs created, {skipped} runs already done (region {args.region})")


def add_arguments(parser) -> None:
  parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"),
                      help="GCP project (default: $GOOGLE_CLOUD_PROJECT).")
  parser.add_argument("--region", default="us-central1", help="Vertex AI region with the TPU's training quota.")
  parser.add_argument("--service_account", default="", help="Service account the jobs run as (default: "
                      "Vertex AI's custom code service agent).")
  parser.add_argument("--timeout_hours", type=float, default=168.0, help="Longest a job may run (Vertex's "
                      "default: 7 days); a run cut off resumes when launched again.")


def main(argv=None) -> int:
  return cloud.launcher_main(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
