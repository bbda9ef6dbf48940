r"""The one entry point: `python -m batch_rl_dr3.train --base_dir=DIR --gin_files=... --gin_bindings=...`.

Dopamine's three flags, plus shortcuts for the bindings every Atari run sets:

  python -m batch_rl_dr3.train --base_dir=runs/pong_cql_dr3 \
      --gin_files=atari/cql_qr.gin --gin_files=atari/dr3.gin --gin_files=atari/1pct.gin \
      --data_dir=/data/dqn_replay --game=Pong --run=1 --seed=0

Gin files are looked up as given, then under the repository's `gin_configs/`. Rerunning the same command
resumes the run from its last checkpoint; a finished run (DONE in base_dir) exits at once. SIGTERM saves a
checkpoint at the next gradient step and exits 0 (rerun to resume from that step). A second process on the
same --base_dir exits 1 naming the process that holds it.
Exit codes: 0 done or preempted (DONE tells them apart), 1 bad input (one line names the flag / binding / file,
or the folder is in use), 2 training diverged (NaN/inf).
"""
import os
import sys

import batch_rl_dr3  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import batch_rl_dr3.quiet  # noqa: F401  (before TensorFlow: drops start-up lines that are never news)
from absl import app
from absl import flags
import gin

from batch_rl_dr3 import GIN_CONFIG_DIR
from batch_rl_dr3 import runner
from batch_rl_dr3.errors import ConfigError, DataError, RunPreempted, TrainingDivergedError, first_line
# Modules whose gin configurables a config may name: importing registers them.
from batch_rl_dr3 import atari_experiment  # noqa: F401
from batch_rl_dr3.continuous import experiment as continuous_experiment  # noqa: F401

FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line; defined only when run as a program, so importing this module for its
  functions never collides with another command's flags (absl flags are global)."""
  flags.DEFINE_string("base_dir", None, "Run folder (local path or gs://...). Rerun to resume.")
  flags.DEFINE_multi_string("gin_files", [], "Gin config files (paths, or relative to gin_configs/).")
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'AtariExperiment.agent_name=\"rem\"'.")
  flags.DEFINE_string("data_dir", None, "DQN Replay root (<root>/<Game>/<run>/replay_logs) or a replay_logs "
                      "folder; local or gs://. Shortcut for load_dataset.data_dir.")
  flags.DEFINE_string("game", None, "Atari game, e.g. Pong. Shortcut for AtariExperiment.game.")
  flags.DEFINE_integer("run", None, "Which logged DQN run of the game (1..5). Shortcut for AtariExperiment.data_run.")
  flags.DEFINE_integer("seed", None, "Seed. Shortcut for run_experiment.seed.")
  flags.DEFINE_string("init_from", None, "A run folder (or <run>/checkpoints/ckpt-N) whose Q-networks start this "
                      "run in a new --base_dir (the DR3 paper's Fig. 2). Shortcut for run_experiment.init_from.")


EXIT_BAD_INPUT = 1
EXIT_DIVERGED = 2


def resolve_gin_file(path: str) -> str:
  """A gin file as given, else under gin_configs/; ConfigError naming it when neither exists."""
  for candidate in (path, os.path.join(GIN_CONFIG_DIR, path)):
    if os.path.isfile(candidate):
      return candidate
  raise ConfigError(f"--gin_files={path}: no such file (looked in the working directory and in "
                    f"{GIN_CONFIG_DIR})")


def flag_bindings(data_dir=None, game=None, run=None, seed=None, init_from=None):
  """The gin bindings that the shortcut flags stand for."""
  bindings = []
  if init_from is not None:
    bindings.append(f"run_experiment.init_from = {init_from!r}")
  if data_dir is not None:
    bindings.append(f"load_dataset.data_dir = {data_dir!r}")
  if game is not None:
    bindings.append(f"AtariExperiment.game = {game!r}")
  if run is not None:
    bindings.append(f"AtariExperiment.data_run = {run}")
  if seed is not None:
    bindings.append(f"run_experiment.seed = {seed}")
  return bindings


def parse_gin(gin_files, gin_bindings) -> None:
  """Parses gin files and bindings; an unknown configurable or parameter becomes one ConfigError line."""
  gin.clear_config()
  gin.add_config_file_search_path(GIN_CONFIG_DIR)
  # The Atari experiment is the default; a continuous config binds ContinuousExperiment instead.
  gin.bind_parameter("run_experiment.create_experiment", atari_experiment.AtariExperiment)
  files = [resolve_gin_file(f) for f in gin_files]
  try:
    gin.parse_config_files_and_bindings(files, gin_bindings, finalize_config=False)
  except (ValueError, KeyError, SyntaxError) as e:
    message = str(e).strip().splitlines()
    raise ConfigError("gin: " + " | ".join(line.strip() for line in message if line.strip())) from None


def train(base_dir, gin_files=(), gin_bindings=()):
  """Parses the config and runs the experiment; the programmatic form of the command line."""
  if not base_dir:
    raise ConfigError("--base_dir is required (the run folder; rerun the same command to resume)")
  parse_gin(gin_files, gin_bindings)
  try:
    return runner.run_experiment(base_dir)
  except RuntimeError as e:
    # gin's way of saying a gin.REQUIRED parameter was not bound, e.g. AtariExperiment.game.
    if str(e).startswith("Required bindings"):
      raise ConfigError(f"gin: {first_line(e)} (for AtariExperiment.game pass --game; for "
                        "load_dataset.data_dir pass --data_dir)") from None
    raise


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; use --gin_bindings for settings", file=sys.stderr)
    return EXIT_BAD_INPUT
  bindings = flag_bindings(FLAGS.data_dir, FLAGS.game, FLAGS.run, FLAGS.seed,
                           FLAGS.init_from) + list(FLAGS.gin_bindings)
  try:
    train(FLAGS.base_dir, FLAGS.gin_files, bindings)
  except (ConfigError, DataError) as e:
    print(f"error: {first_line(e)}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except TrainingDivergedError as e:
    print(f"error: {first_line(e)}", file=sys.stderr)
    return EXIT_DIVERGED
  except RunPreempted as e:
    print(f"preempted: {first_line(e)}", file=sys.stderr)
    return 0
  return 0


def run():
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
