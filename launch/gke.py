r"""Sends a sweep to GKE TPU node pools (v4 / v5e / v5p / v6e): one Kubernetes Job per run, built with the
`kubernetes` client's models.

    python -m launch.gke --sweep=table1 --root=gs://MY_BUCKET/dr3 --tpu=v5e --spot \
        --image=us-central1-docker.pkg.dev/MY_PROJECT/batch-rl-dr3/trainer:tpu --service_account=dr3-runner
    python -m launch.gke --sweep=table1 --root=gs://MY_BUCKET/dr3 --tpu=v6e --dry_run > jobs.json  # kubectl-ready
    python -m launch.gke --sweep=table1 --estimate

Each Job (`kubernetes.client.V1Job`): one pod on a single-host 4-chip slice, placed by the node selectors
`cloud.google.com/gke-tpu-accelerator` and `cloud.google.com/gke-tpu-topology` (+ `cloud.google.com/gke-spot`
with --spot) and requesting every chip (`google.com/tpu: 4` as request and limit); the container runs

    python -m launch.resumable -- python -m batch_rl_dr3.train --base_dir=<root>/<run name> ... \
        --gin_files=launch/gin/tpu.gin

Resumable: `restartPolicy: Never` and a `podFailurePolicy` that
  - ignores pods ended by a disruption (condition DisruptionTarget: spot reclaim, preemption, node drain) and
    pods that exit 75 (launch.resumable: stopped by SIGTERM before the end): the Job starts a new pod, not
    counted against backoffLimit, which reruns the same command and resumes from the run's checkpoint;
  - fails the Job at once on exit 1 (bad input) or 2 (training diverged): retrying cannot help;
  - counts anything else (a crash, an out-of-memory kill) against `backoffLimit` (--backoff_limit, default 3).
Launching the sweep again skips Jobs that exist and have not failed, and replaces failed ones. The image is
launch/Dockerfile built with ACCELERATOR=tpu (tensorflow-tpu and libtpu; see launch/README.md). The pods read
and write gs:// through the Kubernetes service account given by --service_account (Workload Identity).
"""
import sys
from typing import List

from launch import cloud

PROGRAM = "launch/gke.py"
REQUIREMENTS = {"kubernetes.client": "kubernetes"}
OFFERED = ("v4", "v5e", "v5p", "v6e")
WHERE = "GKE"
CONTAINER = "train"
# Kubernetes object names are DNS-1123 labels of at most 63 characters (a Job's name is also a pod label).
MAX_NAME = 63


def _models():
  from kubernetes import client
  return client


def job_manifest(job: cloud.CloudRun, *, tpu: cloud.TpuSlice, image: str, spot: bool, backoff_limit: int,
                 namespace: str, service_account: str = "", sweep_name: str = ""):
  """The run's `kubernetes.client.V1Job`."""
  from launch import resumable
  k8s = _models()
  chips = {"google.com/tpu": str(tpu.chips)}
  node_selector = {"cloud.google.com/gke-tpu-accelerator": tpu.gke_accelerator,
                   "cloud.google.com/gke-tpu-topology": tpu.topology}
  tolerations = [k8s.V1Toleration(key="google.com/tpu", operator="Exists", effect="NoSchedule")]
  if spot:
    node_selector["cloud.google.com/gke-spot"] = "true"
    tolerations.append(k8s.V1Toleration(key="cloud.google.com/gke-spot", operator="Equal", value="true",
                                        effect="NoSchedule"))
  container = k8s.V1Container(
      name=CONTAINER, image=image, command=job.command, args=job.args,
      resources=k8s.V1ResourceRequirements(requests=chips, limits=chips))
  labels = {"app": "batch-rl-dr3", "sweep": cloud.job_name(sweep_name, MAX_NAME), "tpu": tpu.generation}
  pod = k8s.V1PodSpec(
      restart_policy="Never", node_selector=node_selector, tolerations=tolerations, containers=[container],
      service_account_name=service_account or None,
      # A spot node gives 30 s notice: the entry point saves at the next step boundary within it.
      termination_grace_period_seconds=25 if spot else 60)
  failure_policy = k8s.V1PodFailurePolicy(rules=[
      k8s.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
          k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
      k8s.V1PodFailurePolicyRule(action="Ignore", on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
          container_name=CONTAINER, operator="In", values=[resumable.EXIT_RESUME])),
      k8s.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
          container_name=CONTAINER, operator="In", values=list(resumable.EXIT_FINAL))),
  ])
  return k8s.V1Job(
      api_version="batch/v1", kind="Job",
      metadata=k8s.V1ObjectMeta(name=job.job_name, namespace=namespace, labels=labels,
                                annotations={"batch-rl-dr3/run": job.run_name, "batch-rl-dr3/base_dir": job.base_dir}),
      spec=k8s.V1JobSpec(
          backoff_limit=backoff_limit, pod_failure_policy=failure_policy, completions=1, parallelism=1,
          template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod)))


def build(args, sweep_name: str, jobs: List[cloud.CloudRun]):
  if args.backoff_limit < 0:
    raise cloud.ConfigError(f"--backoff_limit={args.backoff_limit}; expected >= 0")
  tpu = cloud.tpu_slice(args.tpu, OFFERED)
  return [job_manifest(job, tpu=tpu, image=args.image or cloud.DRY_RUN_IMAGE, spot=args.spot,
                       backoff_limit=args.backoff_limit, namespace=args.namespace,
                       service_account=args.service_account, sweep_name=sweep_name) for job in jobs]


def describe(manifests) -> dict:
  """A kubectl-ready List of the Jobs (`kubectl apply -f`)."""
  serialize = _models().ApiClient().sanitize_for_serialization
  return {"apiVersion": "v1", "kind": "List", "items": [serialize(m) for m in manifests]}


def submit(args, manifests) -> None:
  """Creates each Job; an existing Job is kept unless it failed, in which case it is replaced."""
  from kubernetes import config
  from kubernetes.client.rest import ApiException
  k8s = _models()
  config.load_kube_config(context=args.context)
  batch = k8s.BatchV1Api()
  counts = {"created": 0, "kept": 0, "replaced": 0}
  for manifest in manifests:
    name = manifest.metadata.name
    try:
      existing = batch.read_namespaced_job_status(name, args.namespace)
    except ApiException as e:
      if e.status != 404:
        raise
      existing = None
    if existing is not None:
      failed = any(c.type == "Failed" and c.status == "True" for c in (existing.status.conditions or []))
      if not failed:
        counts["kept"] += 1
        continue
      # Background: the Job object goes at once (its pods after), so the new one can take its name.
      batch.delete_namespaced_job(name, args.namespace, propagation_policy="Background")
      counts["replaced"] += 1
    else:
      counts["created"] += 1
    batch.create_namespaced_job(args.namespace, manifest)
    print(f"job/{name}  {manifest.metadata.annotations['batch-rl-dr3/run']}", flush=True)
  print(f"GKE namespace {args.namespace}: {counts['created']} Jobs created, {counts['replaced']} failed ones "
        f"replaced, {counts['kept']} kept (running or done)")


def add_arguments(parser) -> None:
  parser.add_argument("--namespace", default="default", help="Kubernetes namespace of the Jobs.")
  parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one; "
                      "`gcloud container clusters get-credentials` sets it).")
  parser.add_argument("--service_account", default="", help="Kubernetes service account of the pods, bound to "
                      "a Google service account that can write --root (Workload Identity).")
  parser.add_argument("--backoff_limit", type=int, default=3, help="Failed pods (crashes, not preemptions) "
                      "before a Job gives up.")


def main(argv=None) -> int:
  return cloud.launcher_main(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
