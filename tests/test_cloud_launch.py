"""The TPU v4 / v5e / v5p / v6e launchers, offline: the request objects of google-cloud-aiplatform (Vertex AI
custom jobs) and the kubernetes client's Job models they build for real sweeps (machine type, TPU placement,
the train command and its flags, restart / preemption policy), their dry-run CLIs without credentials, the
one-line message without their SDKs, and the resumable wrapper on real subprocesses."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from batch_rl_dr3 import REPO_ROOT
from batch_rl_dr3.errors import ConfigError
from launch import cloud
from launch import gke
from launch import resumable
from launch import sweep as sweep_lib
from launch import vertex

ROOT = "gs://my-bucket/dr3"
TRAIN = ["python", "-m", "launch.resumable", "--", "python", "-m", "batch_rl_dr3.train"]


def _table1_pong():
  sweep = sweep_lib.load_sweep("table1")
  return sweep, sweep.select({"game": ["Pong"], "seed": ["seed0"]})


@pytest.mark.parametrize("tpu, machine_type, topology", [
    ("v5e", "ct5lp-hightpu-4t", "2x2"), ("v5p", "ct5p-hightpu-4t", "2x2x1"), ("v6e", "ct6e-standard-4t", "2x2")])
def test_vertex_requests_carry_the_tpu_machine_the_command_and_a_resumable_schedule(tpu, machine_type, topology):
  from google.cloud import aiplatform_v1 as api
  sweep, runs = _table1_pong()
  args = cloud.parse_args(vertex, ["--sweep=table1", f"--root={ROOT}", f"--tpu={tpu}", "--spot", "--project=p1",
                            "--region=us-west4", "--image=img:1", "--timeout_hours=48"])
  jobs = cloud.cloud_runs(runs, ROOT, sweep.default_data_dir, where="Vertex AI")
  requests = vertex.build(args, sweep.name, jobs)
  assert len(requests) == 3 * 4 and all(isinstance(r, api.CreateCustomJobRequest) for r in requests)
  request = next(r for r, j in zip(requests, jobs) if j.run_name == "table1/1pct/cql_qr+dr3/Pong/seed0")
  assert request.parent == "projects/p1/locations/us-west4"
  job = request.custom_job
  assert job.display_name == "table1--1pct--cql-qr-plus-dr3--pong--seed0"
  [pool] = job.job_spec.worker_pool_specs
  assert pool.replica_count == 1
  assert pool.machine_spec.machine_type == machine_type and pool.machine_spec.tpu_topology == topology
  assert pool.machine_spec.accelerator_type == api.AcceleratorType.ACCELERATOR_TYPE_UNSPECIFIED
  container = pool.container_spec
  assert container.image_uri == "img:1" and list(container.command) == TRAIN
  flags = list(container.args)
  assert flags[0] == f"--base_dir={ROOT}/table1/1pct/cql_qr+dr3/Pong/seed0"
  assert [a for a in flags if a.startswith("--gin_files=")] == [
      "--gin_files=atari/cql_qr.gin", "--gin_files=atari/dr3.gin", "--gin_files=atari/1pct.gin",
      "--gin_files=launch/gin/tpu.gin"]
  assert {"--game=Pong", "--seed=0", "--run=1", "--data_dir=gs://atari-replay-datasets/dqn"} <= set(flags)
  scheduling = job.job_spec.scheduling
  assert scheduling.strategy == api.Scheduling.Strategy.SPOT
  assert scheduling.restart_job_on_worker_restart and not scheduling.disable_retries
  assert scheduling.timeout.total_seconds() == 48 * 3600
  assert job.job_spec.base_output_directory.output_uri_prefix == f"{ROOT}/table1/1pct/cql_qr+dr3/Pong/seed0"
  assert dict(job.labels) == {"sweep": "table1", "tpu": tpu}
  standard = vertex.build(cloud.parse_args(vertex, ["--sweep=table1", f"--root={ROOT}", f"--tpu={tpu}", "--dry_run"]),
                                   sweep.name, jobs[:1])[0]
  assert standard.custom_job.job_spec.scheduling.strategy == api.Scheduling.Strategy.STANDARD


@pytest.mark.parametrize("tpu, accelerator, topology", [
    ("v4", "tpu-v4-podslice", "2x2x1"), ("v5e", "tpu-v5-lite-podslice", "2x2"), ("v5p", "tpu-v5p-slice", "2x2x1"),
    ("v6e", "tpu-v6e-slice", "2x2")])
def test_gke_jobs_select_the_tpu_pool_take_every_chip_and_survive_preemption(tpu, accelerator, topology):
  from kubernetes import client as k8s
  sweep = sweep_lib.load_sweep("table1")
  args = cloud.parse_args(gke, ["--sweep=table1", f"--root={ROOT}", f"--tpu={tpu}", "--spot", "--image=img:1",
                         "--namespace=rl", "--service_account=runner", "--backoff_limit=5"])
  jobs = cloud.cloud_runs(sweep.runs, ROOT, sweep.default_data_dir, where="GKE", max_name_length=gke.MAX_NAME)
  manifests = gke.build(args, sweep.name, jobs)
  assert len(manifests) == 612 and all(isinstance(m, k8s.V1Job) for m in manifests)
  names = [m.metadata.name for m in manifests]
  assert len(set(names)) == 612 and max(map(len, names)) <= 63
  job = next(m for m in manifests if m.metadata.annotations["batch-rl-dr3/run"] == "table1/5pct/rem/Qbert/seed2")
  assert job.metadata.namespace == "rl" and job.spec.backoff_limit == 5
  pod = job.spec.template.spec
  assert pod.node_selector == {"cloud.google.com/gke-tpu-accelerator": accelerator,
                               "cloud.google.com/gke-tpu-topology": topology, "cloud.google.com/gke-spot": "true"}
  assert pod.restart_policy == "Never" and pod.service_account_name == "runner"
  [container] = pod.containers
  assert container.resources.limits == container.resources.requests == {"google.com/tpu": "4"}
  assert container.image == "img:1" and container.command == TRAIN
  assert container.args[0] == f"--base_dir={ROOT}/table1/5pct/rem/Qbert/seed2"
  assert {"--game=Qbert", "--seed=2", "--gin_files=launch/gin/tpu.gin"} <= set(container.args)
  rules = job.spec.pod_failure_policy.rules
  assert [(r.action, r.on_pod_conditions[0].type if r.on_pod_conditions else r.on_exit_codes.values)
          for r in rules] == [("Ignore", "DisruptionTarget"), ("Ignore", [75]), ("FailJob", [1, 2])]
  assert all(r.on_exit_codes.container_name == container.name for r in rules[1:])
  on_demand = gke.build(cloud.parse_args(gke, ["--sweep=table1", f"--root={ROOT}", f"--tpu={tpu}"]),
                                  sweep.name, jobs[:1])[0]
  assert "cloud.google.com/gke-spot" not in on_demand.spec.template.spec.node_selector


def test_cloud_runs_refuse_local_roots_and_the_continuous_path():
  sweep = sweep_lib.load_sweep("smoke")
  with pytest.raises(ConfigError, match=r"--root='runs/': GKE jobs write their runs to Cloud Storage"):
    cloud.cloud_runs(sweep.runs, "runs/", "gs://d", where="GKE")
  table2 = sweep_lib.load_sweep("table2")
  with pytest.raises(ConfigError, match=r"run table2/kitchen-mixed-v0/cql/seed0: only the Atari path"):
    cloud.cloud_runs(table2.runs, ROOT, "gs://d", where="Vertex AI")
  with pytest.raises(ConfigError, match=r"launch/gin/multi_seed.gin and the data-parallel launch/gin/tpu.gin"):
    cloud.cloud_runs(sweep.runs, ROOT, "gs://d", where="GKE", extra_gin_files=["launch/gin/multi_seed.gin"])
  with pytest.raises(ConfigError, match=r"--tpu=v4; expected one of v5e, v5p, v6e"):
    cloud.tpu_slice("v4", vertex.OFFERED)


def _clean_env(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "KUBECONFIG"))}
  env.update(HOME=str(tmp_path), GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"),
             KUBECONFIG=str(tmp_path / "none.yaml"))
  return env


@pytest.mark.parametrize("module", ["launch.vertex", "launch.gke"])
def test_dry_run_clis_print_every_request_without_credentials(module, tmp_path):
  result = subprocess.run([sys.executable, "-m", module, "--sweep=smoke", f"--root={ROOT}", "--tpu=v6e",
                           "--dry_run"], cwd=REPO_ROOT, env=_clean_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads(result.stdout)
  if module == "launch.vertex":
    assert [r["customJob"]["displayName"] for r in out] == ["smoke--dqn--pong--seed0", "smoke--dqn-plus-dr3--pong--seed0"]
    assert out[0]["customJob"]["jobSpec"]["workerPoolSpecs"][0]["machineSpec"] == {
        "machineType": "ct6e-standard-4t", "tpuTopology": "2x2"}
    assert out[0]["customJob"]["jobSpec"]["scheduling"]["strategy"] == "STANDARD"
  else:
    assert out["kind"] == "List" and [i["kind"] for i in out["items"]] == ["Job", "Job"]
    pod = out["items"][1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v6e-slice"
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": "4"}
  assert "# 2 " in result.stderr and "dry run: nothing launched" in result.stderr


@pytest.mark.parametrize("module, package", [("launch.vertex", "google-cloud-aiplatform"), ("launch.gke", "kubernetes")])
def test_without_their_sdk_the_launchers_say_what_to_install(module, package, tmp_path):
  # `python -S`: no site-packages, so the SDK is genuinely absent; the sweep code needs the standard library only.
  result = subprocess.run([sys.executable, "-S", "-m", module, "--sweep=smoke", f"--root={ROOT}", "--dry_run"],
                          cwd=REPO_ROOT, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr == (f"error: launch/{module.split('.')[1]}.py needs {package}, not installed here: "
                           f"{cloud.INSTALL_HINT}\n")


def _fake(tmp_path, body):
  script = tmp_path / "job.py"
  script.write_text("import os, signal, sys, time\n"
                    "base = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--base_dir=')][0]\n" + body)
  return [sys.executable, str(script), f"--base_dir={tmp_path / 'run'}"]


def test_resumable_turns_an_unfinished_exit_0_into_a_retry_and_passes_failures_through(tmp_path):
  (tmp_path / "run").mkdir()
  said = io.StringIO()
  assert resumable.run(_fake(tmp_path, "sys.exit(0)\n"), out=said) == resumable.EXIT_RESUME
  assert "has no DONE yet" in said.getvalue()
  assert resumable.run(_fake(tmp_path, "sys.exit(1)\n")) == 1
  assert resumable.run(_fake(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)\n")) == 128 + 9
  assert resumable.run(_fake(tmp_path, "open(os.path.join(base, 'DONE'), 'w').write('{}')\n")) == 0
  with pytest.raises(ValueError, match="no --base_dir"):
    resumable.run([sys.executable, "-c", "pass"])


def test_resumable_forwards_sigterm_and_asks_for_a_restart(tmp_path):
  (tmp_path / "run").mkdir()
  body = ("def stop(signum, frame):\n"
          "  open(os.path.join(base, 'saved'), 'w').write('checkpoint')\n"
          "  sys.exit(0)\n"
          "signal.signal(signal.SIGTERM, stop)\n"
          "open(os.path.join(base, 'ready'), 'w').close()\n"
          "time.sleep(60)\n")
  wrapper = subprocess.Popen([sys.executable, "-m", "launch.resumable", "--"] + _fake(tmp_path, body),
                             cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 30
  while not (tmp_path / "run" / "ready").exists() and time.time() < deadline:
    time.sleep(0.05)
  wrapper.send_signal(signal.SIGTERM)
  _, err = wrapper.communicate(timeout=30)
  assert wrapper.returncode == resumable.EXIT_RESUME, err
  assert (tmp_path / "run" / "saved").read_text() == "checkpoint"


def test_resumable_waits_for_a_dead_predecessors_lock_to_go_stale(tmp_path):
  from batch_rl_dr3 import run_lock
  base = tmp_path / "run"
  base.mkdir()
  slept = []
  assert resumable.wait_for_stale_lock(str(base), sleep=slept.append) == 0.0 and slept == []
  lock = run_lock.RunLock(str(base))
  lock.acquire()  # a real lock with a fresh heartbeat, as a predecessor killed without notice leaves it
  try:
    heartbeat = float(lock.holder()["heartbeat"])
    said = io.StringIO()
    waited = resumable.wait_for_stale_lock(str(base), clock=lambda: heartbeat + 100.0, sleep=slept.append, out=said)
    assert waited == slept[0] == pytest.approx(run_lock.STALE_SECONDS + 1.0 - 100.0)
    assert "waiting" in said.getvalue()
    assert resumable.wait_for_stale_lock(str(base), clock=lambda: heartbeat + run_lock.STALE_SECONDS + 2.0,
                                         sleep=slept.append) == 0.0 and len(slept) == 1
  finally:
    lock.release()
