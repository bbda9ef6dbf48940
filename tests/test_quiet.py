"""Start-up prints only news: a config that loads fine gives no library noise, real errors still show."""
import os
import subprocess
import sys

from batch_rl_dr3 import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_start_up_prints_only_our_one_line():
  """continuous/sac.gin includes continuous/base.gin (gin used to log 'Path not found' at error level); the
  command imports TF, tf-agents (gym's banner) and google.api_core on a CPU-only machine. The run is refused
  at once for num_iterations=0, so stderr must hold exactly that one line."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONPATH"] = REPO
  result = subprocess.run([sys.executable, "-m", "batch_rl_dr3.train", "--base_dir=/nonexistent/never_written",
                           "--gin_files=continuous/sac.gin", "--gin_bindings=run_experiment.num_iterations = 0"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      "error: run_experiment: num_iterations=0, gradient_steps_per_iteration=10000, log_every_steps=1000, "
      "steps_per_call=1; expected each >= 1"], result.stderr


def test_noise_is_only_the_known_lines():
  assert quiet.is_noise("E0000 00:00:17 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting to "
                        "register factory for plugin cuDNN when one has already been registered", has_gpu=False)
  assert quiet.is_noise("W0000 computation_placer.cc:177] computation placer already registered.", has_gpu=True)
  cuinit = "E cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)"
  assert quiet.is_noise(cuinit, has_gpu=False)
  assert not quiet.is_noise(cuinit, has_gpu=True)  # with a GPU present, a failed CUDA start is news
  assert not quiet.is_noise("E tensorflow/core/framework/op_kernel.cc] OOM when allocating tensor", has_gpu=False)


def test_tensorflow_info_lines_are_dropped_warnings_kept():
  import logging  # pylint: disable=g-import-not-at-top
  assert logging.getLogger("tensorflow").getEffectiveLevel() == logging.WARNING
