r"""The README's main command (`make quickstart`): the whole pipeline on a small built-in example.

1. Collects a small Pong dataset with the collect tool (ALE, Dopamine protocol, random policy), written in the
   DQN Replay format through Dopamine's replay buffer.
2. Trains CQL-QR + DR3 on it for a few hundred gradient steps through the real entry point
   (`python -m batch_rl_dr3.train`), with a short evaluation each iteration.
3. Builds the report (tables + plots) from the run folder and prints where everything is.

Everything goes under --out (default ./quickstart_out); rerunning reuses the collected data and the finished
run. Takes a few minutes on 2 CPU cores.
"""
import os
import shutil
import subprocess
import sys
import time

import batch_rl_dr3  # noqa: F401
from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line; defined only when run as a program, so importing this module for its
  functions never collides with another command's flags (absl flags are global)."""
  flags.DEFINE_string("out", "quickstart_out", "Folder for the dataset, the run and the report.")
  flags.DEFINE_string("game", "Pong", "Game to collect and train on.")
  flags.DEFINE_integer("num_transitions", 6_000, "Transitions to collect.")
  flags.DEFINE_integer("capacity", 2_000, "Transitions per replay checkpoint (the real dataset has 1M).")
  flags.DEFINE_integer("iterations", 2, "Training iterations.")
  flags.DEFINE_integer("steps_per_iteration", 150, "Gradient steps per iteration.")
  flags.DEFINE_integer("evaluation_steps", 500, "Evaluation agent steps per iteration.")


def _run(cmd):
  print("\n$ " + " ".join(cmd), flush=True)
  started = time.time()
  returncode = subprocess.run(cmd, check=False).returncode
  if returncode:
    print(f"quickstart: step failed with exit code {returncode}: {' '.join(cmd)}", file=sys.stderr)
    sys.exit(returncode)
  print(f"  ({time.time() - started:.0f} s)", flush=True)


def main(argv):
  del argv
  out = os.path.abspath(FLAGS.out)
  data_root = os.path.join(out, "data")
  run_dir = os.path.join(out, "runs", f"cql_qr+dr3_{FLAGS.game}_seed0")
  report_dir = os.path.join(out, "report")
  replay_logs = os.path.join(data_root, FLAGS.game, "1", "replay_logs")
  py = sys.executable

  # The marker sits beside the dataset, not in replay_logs (whose listing must hold only checkpoint files).
  collected = os.path.join(data_root, f".collected-{FLAGS.game}-{FLAGS.num_transitions}-{FLAGS.capacity}")
  if os.path.exists(collected):
    print(f"Reusing the collected dataset in {replay_logs}")
  else:
    if os.path.isdir(replay_logs):
      shutil.rmtree(os.path.dirname(replay_logs))  # an interrupted or different collection
    _run([py, "-m", "batch_rl_dr3.data.collect", f"--game={FLAGS.game}", "--run=1",
          f"--num_transitions={FLAGS.num_transitions}", f"--capacity={FLAGS.capacity}", f"--out={data_root}",
          "--seed=0"])
    open(collected, "w").close()

  _run([py, "-m", "batch_rl_dr3.train", f"--base_dir={run_dir}",
        "--gin_files=atari/cql_qr.gin", "--gin_files=atari/dr3.gin",
        f"--data_dir={data_root}", f"--game={FLAGS.game}", "--run=1", "--seed=0",
        "--gin_bindings=load_dataset.setting = 'all'",
        f"--gin_bindings=run_experiment.num_iterations = {FLAGS.iterations}",
        f"--gin_bindings=run_experiment.gradient_steps_per_iteration = {FLAGS.steps_per_iteration}",
        "--gin_bindings=run_experiment.log_every_steps = 50",
        f"--gin_bindings=AtariExperiment.evaluation_steps = {FLAGS.evaluation_steps}",
        # One game that finishes its episode (Dopamine's accounting): a short budget still scores an episode.
        "--gin_bindings=AtariExperiment.num_eval_envs = 1", "--gin_bindings=evaluate.finish_episodes = True"])

  _run([py, "-m", "batch_rl_dr3.analysis.report", f"--runs={os.path.join(out, 'runs', '*')}",
        f"--out={report_dir}", "--reps=2000"])

  print("\nQuickstart finished.")
  print(f"  dataset (DQN Replay format): {replay_logs}")
  print(f"  run folder:                  {run_dir}")
  print(f"    metrics:                   {os.path.join(run_dir, 'metrics.csv')}")
  print(f"    TensorBoard:               tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
  print(f"  report (tables and plots):   {report_dir}")
  for name in sorted(os.listdir(report_dir)) if os.path.isdir(report_dir) else []:
    print(f"    {name}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
