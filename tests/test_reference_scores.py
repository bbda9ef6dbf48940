"""Reference scores and normalized scores, by hand from the published tables."""
import os
import subprocess
import sys

import numpy as np
import pytest

from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.atari_games import DQN_REPLAY_GAMES, DR3_PAPER_GAMES
from batch_rl_dr3.errors import ConfigError


def test_human_normalized_score_by_hand():
  # Pong: random -20.7, human 14.6 (dqn_zoo/atari_data.py).
  assert scores.human_normalized_score("Pong", 14.6) == pytest.approx(100.0)
  assert scores.human_normalized_score("Pong", -20.7) == pytest.approx(0.0)
  assert scores.human_normalized_score("pong", 0.0) == pytest.approx(100 * 20.7 / 35.3)
  # Breakout (1.7, 30.5): 59.3 raw -> 100 * 57.6 / 28.8 = 200 %.
  assert scores.human_normalized_score("Breakout", 59.3) == pytest.approx(200.0)
  # DoubleDunk has a negative human score (-18.6, -16.4): -17.5 is half way.
  assert scores.human_normalized_score("double_dunk", -17.5) == pytest.approx(50.0)
  # Arrays in, arrays out; spelling variants accepted.
  out = scores.human_normalized_score("ms_pacman", np.array([307.3, 6951.6]))
  assert isinstance(out, np.ndarray) and out == pytest.approx([0.0, 100.0])


def test_every_dqn_replay_game_has_a_score_except_the_five_outside_atari57():
  missing = [g for g in DQN_REPLAY_GAMES if not scores.has_human_score(g)]
  assert sorted(missing) == sorted(scores.GAMES_WITHOUT_HUMAN_SCORE)
  assert all(scores.has_human_score(g) for g in DR3_PAPER_GAMES)
  assert len(scores.ATARI_RANDOM_AND_HUMAN_SCORES) == 57


def test_game_without_human_score_is_a_clear_error():
  with pytest.raises(ConfigError, match="'Pooyan' has no human reference score"):
    scores.human_normalized_score("Pooyan", 100.0)
  with pytest.raises(ConfigError, match="unknown Atari game"):
    scores.human_normalized_score("Pongg", 1.0)


@pytest.mark.parametrize("game,random_score,human_score", [
    ("Asterix", 210.0, 8503.3), ("Seaquest", 68.4, 42054.7), ("VideoPinball", 16256.9, 17667.9),
    ("YarsRevenge", 3092.9, 54576.9), ("UpNDown", 533.4, 11693.2), ("Skiing", -17098.1, -4336.9),
])
def test_values_match_dqn_zoo(game, random_score, human_score):
  assert scores.random_and_human_score(game) == (random_score, human_score)


def test_d4rl_normalized_score_by_hand():
  # hopper: REF_MIN -20.272305, REF_MAX 3234.3 (d4rl/infos.py), shared by every dataset and version.
  for name in ("hopper-medium-v2", "hopper-random-v0", "d4rl_mujoco_hopper/v2-medium-replay"):
    assert scores.d4rl_normalized_score(name, 3234.3) == pytest.approx(100.0)
  assert scores.d4rl_normalized_score("hopper-medium-v2", 1607.013848) == pytest.approx(
      100 * (1607.013848 + 20.272305) / (3234.3 + 20.272305))
  assert scores.d4rl_normalized_score("kitchen-mixed-v0", 1.5) == pytest.approx(37.5)  # 0..4 subtasks
  assert scores.d4rl_normalized_score("antmaze-medium-play-v0", 0.25) == pytest.approx(25.0)
  assert scores.d4rl_normalized_score("d4rl_antmaze/large-diverse-v2", 1.0) == pytest.approx(100.0)
  assert scores.d4rl_normalized_score("door-human-v1", -56.512833) == pytest.approx(0.0)
  assert scores.d4rl_normalized_score("halfcheetah-full-replay-v2", np.array([-280.178953, 12135.0])) == \
      pytest.approx([0.0, 100.0])


def test_d4rl_tfds_names_map_to_d4rl_env_names():
  assert scores.d4rl_env_name("d4rl_mujoco_walker2d/v2-medium-expert") == "walker2d-medium-expert-v2"
  assert scores.d4rl_env_name("d4rl_mujoco_hopper/v0-mixed") == "hopper-medium-replay-v0"
  assert scores.d4rl_env_name("d4rl_adroit_pen/v1-cloned") == "pen-cloned-v1"
  assert scores.d4rl_env_name("d4rl_antmaze/umaze-diverse-v0") == "antmaze-umaze-diverse-v0"


def test_unknown_d4rl_env_is_a_clear_error():
  assert not scores.has_d4rl_reference("pickplace-cog")
  with pytest.raises(ConfigError, match="'pickplace-cog' has no reference score"):
    scores.d4rl_normalized_score("pickplace-cog", 1.0)


def test_training_and_evaluation_do_not_import_analysis():
  """Reference scores are the ground layer: the train entry point (Atari and continuous experiments,
  evaluation) gets them without loading the report's modules (rliable, matplotlib, ...)."""
  code = ("import sys, batch_rl_dr3.train, batch_rl_dr3.evaluation, batch_rl_dr3.continuous.evaluation\n"
          "print(sorted(m for m in sys.modules if m.startswith('batch_rl_dr3.analysis')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == "[]"
