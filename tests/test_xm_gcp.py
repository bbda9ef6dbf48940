"""The XManager GCP launcher's dry run, with the real xmanager: executors, Vertex machine specs, args, names and
counts of the jobs; bad accelerators and roots; the Dockerfile installs what the Makefile installs."""
import json
import os
import re
import subprocess
import sys

import pytest

from launch import xm_gcp  # first: it silences google-api-core's import-time Python 3.11 FutureWarning
from xmanager import xm
from xmanager import xm_local
from xmanager.cloud import vertex
from xmanager.xm import utils as xm_utils

from batch_rl_dr3 import REPO_ROOT
from batch_rl_dr3 import atari_games
from batch_rl_dr3.errors import ConfigError
from launch import sweep as sweep_lib

ROOT = "gs://my-bucket/dr3"


def test_table1_on_tpu_v3_is_one_vertex_job_per_run_with_the_runs_flags():
  sweep = sweep_lib.load_sweep("table1")
  specs = xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="tpu_v3")
  assert len(specs) == len(atari_games.DR3_PAPER_GAMES) * 3 * 4 * 3
  names = [s.job_name for s in specs]
  assert len(set(names)) == len(names)
  assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", n) and len(n) <= 128 for n in names)
  spec = next(s for s in specs if s.run_name == "table1/1pct/cql_qr+dr3/Pong/seed0")
  assert spec.job_name == "table1--1pct--cql_qr-plus-dr3--pong--seed0".replace("_", "-")
  assert spec.args[0] == f"--base_dir={ROOT}/table1/1pct/cql_qr+dr3/Pong/seed0"
  assert "--data_dir=gs://atari-replay-datasets/dqn" in spec.args  # read straight from the public bucket
  assert {"--game=Pong", "--seed=0", "--run=1", "--gin_files=atari/dr3.gin"} <= set(spec.args)
  # The TPU's data-parallel gin file comes after the sweep's gin files, and exists in the image's workdir.
  gin_files = [a for a in spec.args if a.startswith("--gin_files=")]
  assert gin_files == ["--gin_files=atari/cql_qr.gin", "--gin_files=atari/dr3.gin", "--gin_files=atari/1pct.gin",
                       "--gin_files=launch/gin/tpu.gin"]
  assert spec.args.index(gin_files[-1]) < min(i for i, a in enumerate(spec.args) if a.startswith("--gin_bindings")
                                              or a.startswith("--data_dir"))
  assert os.path.isfile(os.path.join(REPO_ROOT, xm_gcp.TPU_GIN))

  job = spec.job(xm_local.executables.GoogleContainerRegistryImage(name="img", image_path="r/p/img:1"))
  assert isinstance(job.executor, xm_local.Vertex)
  # xmanager's Vertex backend hands the args over as the container's argv (to_list(ARGV_ESCAPER), no shell).
  assert job.name == spec.job_name and job.args.to_list(xm_utils.ARGV_ESCAPER) == spec.args
  assert job.executor.requirements.accelerator == xm.ResourceType.TPU_V3
  assert spec.machine_spec() == {"accelerator_type": "TPU_V3", "accelerator_count": 8, "machine_type": "cloud-tpu"}


def test_gpu_and_cpu_executors_get_machines_that_fit_the_requested_resources():
  sweep = sweep_lib.load_sweep("smoke")
  gpu = xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="v100", accelerator_count=2, cpu=8,
                               ram_gib=40)[0].machine_spec()
  assert gpu["accelerator_type"] == "NVIDIA_TESLA_V100" and gpu["accelerator_count"] == 2
  cpus, ram = vertex._MACHINE_TYPE_TO_CPU_RAM[gpu["machine_type"]]  # pylint: disable=protected-access
  assert cpus >= 8 and ram >= 40 * xm.GiB
  two_gpus = xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="v100", accelerator_count=2)[0]
  assert "--gin_files=launch/gin/mirrored.gin" in two_gpus.args
  one_gpu = xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="t4")[0]
  assert not any(a.startswith("--gin_files=launch/") for a in one_gpu.args)
  cpu = xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="cpu", cpu=16, ram_gib=100)[0].machine_spec()
  assert "accelerator_type" not in cpu
  cpus, ram = vertex._MACHINE_TYPE_TO_CPU_RAM[cpu["machine_type"]]  # pylint: disable=protected-access
  assert cpus >= 16 and ram >= 100 * xm.GiB


def test_bad_accelerators_and_roots_are_named():
  sweep = sweep_lib.load_sweep("smoke")
  with pytest.raises(ConfigError, match=r"--accelerator=tpu_v4: .*TPU v2 / v3 only"):
    xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="tpu_v4")
  with pytest.raises(ConfigError, match=r"--accelerator_count=4 with tpu_v3: .*v3-8"):
    xm_gcp.build_job_specs(sweep, sweep.runs, ROOT, accelerator="tpu_v3", accelerator_count=4)
  table2 = sweep_lib.load_sweep("table2")
  with pytest.raises(ConfigError, match=r"run table2/kitchen-mixed-v0/cql/seed0: only the Atari path"):
    xm_gcp.build_job_specs(table2, table2.runs, ROOT, data_dir="gs://d", accelerator="tpu_v3")
  with pytest.raises(ConfigError, match=r"--root='runs/': .*gs://"):
    xm_gcp.build_job_specs(sweep, sweep.runs, "runs/")


def test_dry_run_cli_prints_every_job_without_credentials(tmp_path):
  # No gcloud config, no application-default credentials, no project: the dry run must not need them.
  env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
  env.update(HOME=str(tmp_path), PYTHONPATH=REPO_ROOT, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"))
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "launch", "xm_gcp.py"), "--sweep=table2",
                           f"--root={ROOT}", "--data_dir=gs://my-bucket/d4rl", "--accelerator=a100",
                           "--only=task=kitchen-mixed-v0,antmaze-large-play-v0", "--dry_run"],
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads(result.stdout)
  assert out["sweep"] == "table2" and out["dockerfile"].endswith("launch/Dockerfile")
  assert len(out["jobs"]) == 2 * 2 * 4
  assert {j["machine_spec"]["accelerator_type"] for j in out["jobs"]} == {"NVIDIA_TESLA_A100"}
  kitchen = next(j for j in out["jobs"] if j["run"] == "table2/kitchen-mixed-v0/cql+dr3/seed3")
  assert kitchen["args"][0] == f"--base_dir={ROOT}/table2/kitchen-mixed-v0/cql+dr3/seed3"
  assert ("--gin_bindings=load_d4rl.hdf5_path = "
          "'gs://my-bucket/d4rl/kitchen/kitchen_microwave_kettle_bottomburner_light-v0.hdf5'") in kitchen["args"]
  assert "--seed=3" in kitchen["args"]


def test_dockerfile_installs_the_makefiles_requirement_files_and_runs_the_entry_point():
  dockerfile = open(xm_gcp.DOCKERFILE).read()
  assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
  makefile = open(os.path.join(REPO_ROOT, "Makefile")).read()
  stamp_rule = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
  installed = re.findall(r"pip install -q (--no-deps )?-r (\S+)", stamp_rule)
  assert installed == [("", "requirements.txt"), ("--no-deps ", "requirements-nodeps.txt")]
  for no_deps, path in installed:
    assert f"pip install {no_deps}-r {path}" in dockerfile
  assert 'ENTRYPOINT ["python", "-m", "launch.resumable", "--", "python", "-m", "batch_rl_dr3.train"]' in dockerfile
  assert "tensorflow-tpu" in dockerfile  # the TPU build of TF for ACCELERATOR=tpu


def test_staged_build_context_holds_the_sources_and_the_accelerators_dockerfile(tmp_path):
  spec = xm_gcp.stage_build_context("tpu_v3", str(tmp_path / "ctx"))
  assert isinstance(spec, xm.Dockerfile) and spec.path == str(tmp_path / "ctx")
  tpu_text = open(spec.dockerfile).read()
  cpu_text = xm_gcp.dockerfile_text("v100")
  assert "ARG ACCELERATOR=tpu" in tpu_text and "ARG ACCELERATOR=cpu" in cpu_text
  assert cpu_text == open(xm_gcp.DOCKERFILE).read()
  assert tpu_text == cpu_text.replace("ARG ACCELERATOR=cpu", "ARG ACCELERATOR=tpu")
  for needed in ("requirements.txt", "requirements-nodeps.txt", "pyproject.toml", "batch_rl_dr3/train.py",
                 "gin_configs/atari/cql_qr.gin", "launch/sweeps/table1.toml"):
    assert (tmp_path / "ctx" / needed).is_file(), needed
  assert not (tmp_path / "ctx" / ".venv").exists() and not (tmp_path / "ctx" / ".git").exists()


def test_without_the_launch_requirements_the_dry_run_says_what_to_install(tmp_path):
  # `python -S`: no site-packages at all, so xmanager (and absl) are genuinely absent; the sweep code is stdlib.
  result = subprocess.run([sys.executable, "-S", os.path.join(REPO_ROOT, "launch", "xm_gcp.py"), "--sweep=smoke",
                           f"--root={ROOT}", "--dry_run"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
  assert result.stderr.startswith("error: launch/xm_gcp.py needs absl-py, xmanager, not installed here: ")
  assert "pip install -r requirements.txt -r requirements-launch.txt" in result.stderr


def test_the_import_guard_names_only_the_missing_packages():
  from launch import cloud
  assert cloud.missing_requirements_line("prog", {"json": "json", "tomllib": "tomllib"}) is None
  line = cloud.missing_requirements_line("prog", {"json": "json", "batch_rl_dr3_no_such_module": "no-such-pkg",
                                                  "xmanager": "xmanager"})
  assert line == f"error: prog needs no-such-pkg, not installed here: {cloud.INSTALL_HINT}"
  with pytest.raises(SystemExit) as exit_info:
    cloud.require("prog", {"batch_rl_dr3_no_such_module": "no-such-pkg"})
  assert exit_info.value.code == 2


def test_job_names_are_cloud_safe_unique_and_bounded():
  from launch import cloud
  assert cloud.job_name("table1/1pct/cql_qr+dr3/Pong/seed0") == "table1--1pct--cql-qr-plus-dr3--pong--seed0"
  long_a = cloud.job_name("table1/first10pct/cql_qr+dr3/MontezumaRevenge/seed0", max_length=40)
  long_b = cloud.job_name("table1/first10pct/cql_qr+dr3/MontezumaRevenge/seed1", max_length=40)
  assert len(long_a) <= 40 and long_a != long_b and long_a.startswith("table1--first10pct")
  assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", long_a)


def test_bindings_with_spaces_reach_the_container_argv_unquoted():
  """Sweeps write bindings as 'X = v'; a shell-quoted token ("'X = v'") would reach gin with its quotes."""
  args = ["--base_dir=gs://b/r", "--gin_bindings=DR3.coefficient = 0.03", "--gin_bindings=Foo.bar = 'x y'"]
  spec = xm_gcp.JobSpec("r", "r", args, xm.JobRequirements(tpu_v3=8))
  job = spec.job(xm_local.executables.GoogleContainerRegistryImage(name="img", image_path="r/p/img:1"))
  assert job.args.to_list(xm_utils.ARGV_ESCAPER) == args
