"""ContinuousExperiment through the shared runner: learning on a tiny dataset, exact resume, the gin recipes,
an end-to-end run from a real-format hdf5 with evaluation in gymnasium's Hopper, and the image (COG) path."""
import functools
import json
import os

import gin
import numpy as np
import pandas as pd
import pytest

from batch_rl_dr3 import GIN_CONFIG_DIR
from batch_rl_dr3 import runner
from batch_rl_dr3 import train
from batch_rl_dr3.continuous import experiment
from batch_rl_dr3.data import d4rl
from batch_rl_dr3.errors import ConfigError

SMALL_NETS = ["FeatureCriticNetwork.hidden_units = (32, 32)", "RegularizedActorNetwork.hidden_units = (32, 32)"]


def regression_dataset(task, n=256, obs_dim=11, act_dim=3):
  """r = sum(s) - |a|^2 with every transition terminal: Q* = r, a well-posed regression target."""
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
  act = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
  return ({"observation": obs, "action": act,
           "reward": (obs.sum(1) - (act ** 2).sum(1)).astype(np.float32),
           "next_observation": rng.normal(size=(n, obs_dim)).astype(np.float32),
           "discount": np.zeros(n, np.float32)}, f"synthetic:{task}")


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  for binding in SMALL_NETS:
    gin.parse_config(binding)
  yield
  gin.clear_config()


def test_training_lowers_the_critic_loss():
  gin.parse_config("create_continuous_agent.critic_learning_rate = 1e-3")
  exp = experiment.ContinuousExperiment(seed=0, task="hopper-medium-v2", agent_name="sac",
                                        load_dataset=regression_dataset, batch_size=64, eval_episodes=0,
                                        dr3_coefficient=0.01)
  losses = [float(exp.train_step()["td_loss"]) for _ in range(200)]
  assert np.mean(losses[-30:]) < 0.3 * np.mean(losses[:30])
  assert exp.run_info() == {"domain": "continuous", "task": "hopper-medium-v2", "agent": "sac",
                            "label": "SAC+DR3 (c0=0.01)", "dr3_coefficient": 0.01, "seed": 0,
                            "data": "synthetic:hopper-medium-v2"}


@pytest.mark.parametrize("agent_name", ["cql_sac", pytest.param("brac", marks=pytest.mark.slow)])
def test_resume_continues_exactly(tmp_path, agent_name):
  # Lagrange: the CQL alpha and its own Adam state must come back too.
  gin.parse_config("Dr3CqlSacAgent.use_lagrange_cql_alpha = True")
  gin.parse_config("BracAgent.behavior_pretrain_steps = 3")  # pre-trained before step 1, not again on resume
  make = functools.partial(experiment.ContinuousExperiment, task="hopper-medium-v2", agent_name=agent_name,
                           load_dataset=regression_dataset, batch_size=16, eval_episodes=0,
                           dr3_coefficient=0.1)
  kwargs = dict(create_experiment=make, gradient_steps_per_iteration=4, tensorboard=False, log_every_steps=4)
  whole = runner.run_experiment(str(tmp_path / "whole"), num_iterations=3, **kwargs)
  runner.run_experiment(str(tmp_path / "split"), num_iterations=2, **kwargs)
  os.remove(tmp_path / "split" / runner.DONE_FILE)  # as if killed after iteration 1 was checkpointed
  resumed = runner.run_experiment(str(tmp_path / "split"), num_iterations=3, **kwargs)
  assert resumed["iteration"] == whole["iteration"] == 2
  # A resume that replayed or skipped random draws gives other batches: differences of order 1. Multi-threaded
  # CPU reductions may still differ in the last float32 bits between processes, hence rel 1e-4.
  for key, value in whole.items():
    if key.startswith("train/"):
      assert resumed[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_gin_recipes_parse_and_name_known_configurables():
  files = sorted(f for f in os.listdir(os.path.join(GIN_CONFIG_DIR, "continuous")) if f.endswith(".gin"))
  assert {"cql_kitchen.gin", "cql_antmaze.gin", "brac_mujoco.gin", "cql_cog.gin", "dr3.gin"} <= set(files)
  overlays = {"dr3.gin", "dr3_cog.gin", "cog_5pct.gin", "cog_25pct.gin", "actor_study_protocol.gin"}  # added after a recipe
  for name in files:
    if name in overlays:
      continue
    train.parse_gin([f"continuous/{name}", "continuous/dr3.gin"], [])
    assert gin.query_parameter("run_experiment.create_experiment").selector.endswith("ContinuousExperiment")
    assert gin.query_parameter("ContinuousExperiment.dr3_coefficient") == 0.001 / 256
    assert gin.query_parameter("DR3.mask_terminal") is True and gin.query_parameter("DR3.stop_gradient_next") is False
  train.parse_gin(["continuous/sac.gin", "continuous/actor_study_protocol.gin"], [])
  assert gin.query_parameter("ContinuousExperiment.validation_fraction") == 0.05
  assert gin.query_parameter("ContinuousExperiment.actor_diagnostics") is True
  train.parse_gin(["continuous/cql_antmaze.gin"], [])
  assert gin.query_parameter("Dr3CqlSacAgent.max_q_backup") is True
  assert gin.query_parameter("load_d4rl.reward_scale") == 4.0
  assert gin.query_parameter("run_experiment.num_iterations") * gin.query_parameter(
      "run_experiment.gradient_steps_per_iteration") == 2_000_000
  with pytest.raises(ConfigError, match="eval_episods"):
    train.parse_gin(["continuous/cql_kitchen.gin"], ["ContinuousExperiment.eval_episods = 1"])


def test_end_to_end_from_hdf5_with_hopper_evaluation(tmp_path):
  """python -m batch_rl_dr3.train's code path: gin recipe + bindings, a D4RL-format hopper file, evaluation
  rollouts in gymnasium Hopper-v5 (observation layout checked against the data)."""
  rng = np.random.default_rng(0)
  n = 300
  data = {"observations": rng.normal(size=(n, 11)).astype(np.float32),
          "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
          "rewards": rng.normal(size=n).astype(np.float32),
          "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
  data["timeouts"][99::100] = True
  path = str(tmp_path / "hopper_medium-v2.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  base_dir = str(tmp_path / "run")
  bindings = SMALL_NETS + [
      f"load_d4rl.hdf5_path = '{path}'", "ContinuousExperiment.task = 'hopper-medium-v2'",
      "run_experiment.num_iterations = 2", "run_experiment.gradient_steps_per_iteration = 3",
      "run_experiment.tensorboard = False", "ContinuousExperiment.batch_size = 16",
      "ContinuousExperiment.eval_episodes = 2", "ContinuousExperiment.eval_max_episode_steps = 15",
      "BracAgent.behavior_pretrain_steps = 4"]
  train.train(base_dir, ["continuous/brac_mujoco.gin", "continuous/dr3.gin"], bindings)
  rows = pd.read_csv(os.path.join(base_dir, "metrics.csv"))
  assert list(rows["iteration"]) == [0, 1] and list(rows["gradient_steps"]) == [3, 6]
  for column in ("train/td_loss", "train/dr3", "train/divergence", "train/behavior_loss", "train/srank",
                 "eval/return", "eval/num_episodes"):
    assert column in rows and np.all(np.isfinite(rows[column])), column
  assert (rows["eval/num_episodes"] == 2).all()
  # D4RL's hopper reference scores (d4rl/infos.py): random -20.272305, expert 3234.3.
  np.testing.assert_allclose(rows["eval/normalized_score"],
                             100 * (rows["eval/return"] + 20.272305) / (3234.3 + 20.272305), rtol=1e-9)
  info = json.load(open(os.path.join(base_dir, "run_info.json")))
  # A BRAC run whose behaviour policy is not trained as BRAC trains it (300,000 steps) says so in its label.
  assert info["label"] == "BRAC+DR3 (behavior_pretrain_steps=4, c0=3.90625e-06, mask_terminal=true)" and info["task"] == "hopper-medium-v2" and info["domain"] == "continuous"
  assert info["behavior_pretrain_steps"] == 4
  assert os.path.exists(os.path.join(base_dir, "DONE"))


def test_evaluation_rejects_a_dataset_of_another_layout():
  exp = experiment.ContinuousExperiment(seed=0, task="halfcheetah-medium-v2", agent_name="sac",
                                        load_dataset=regression_dataset, batch_size=8, eval_episodes=1)
  with pytest.raises(ConfigError, match="HalfCheetah-v5 observes \\(17,\\) but the dataset's observations have 11"):
    exp.evaluate(0)


@pytest.mark.parametrize("source,frame", [("hdf5:/data/antmaze-umaze-v2.hdf5", "d4rl"),
                                          ("minari:D4RL/antmaze/umaze-v1", "gymnasium")])
def test_antmaze_evaluation_frame_follows_the_data_source(source, frame):
  def antmaze_data(task):
    arrays, _ = regression_dataset(task, n=64, obs_dim=29, act_dim=8)
    return arrays, source
  exp = experiment.ContinuousExperiment(seed=0, task="antmaze-umaze-v2", agent_name="sac", load_dataset=antmaze_data,
                                        batch_size=8, eval_episodes=1, eval_max_episode_steps=3)
  assert exp.run_info()["antmaze_frame"] == frame
  metrics = exp.evaluate(0)  # one short episode in that frame's maze
  assert metrics["num_episodes"] == 1.0 and metrics["return"] == 0.0  # 3 steps never reach the goal 8 m away


def test_image_observations_train_through_the_conv_encoder():
  def images(task):
    rng = np.random.default_rng(0)
    n = 32
    return ({"observation": rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8),
             "action": rng.uniform(-0.9, 0.9, (n, 8)).astype(np.float32),
             "reward": rng.integers(0, 2, n).astype(np.float32),
             "next_observation": rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8),
             "discount": np.ones(n, np.float32)}, f"images:{task}")
  gin.parse_config("ImageEncoder.augmentation_padding = 4")  # COG's random crop inside every image network
  exp = experiment.ContinuousExperiment(seed=0, task="pickplace", agent_name="sac", load_dataset=images,
                                        batch_size=8, eval_episodes=0, dr3_coefficient=0.001, setting="5pct")
  assert exp.run_info()["setting"] == "5pct"  # the report groups COG's data fractions apart
  before = [v.numpy().copy() for v in exp.agent.critic_networks[0].encoder.trainable_variables]
  metrics = exp.train_step()
  assert all(np.isfinite(float(v)) for v in metrics.values())
  after = exp.agent.critic_networks[0].encoder.trainable_variables
  assert len(before) == 6 and any(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
  assert exp.diagnostics(0)["srank"] >= 1


@pytest.mark.slow
def test_dr3_lowers_the_feature_dot_product_over_training():
  """The DR3 paper's Fig. 1 effect in small: with bootstrapping (gamma 0.99, no terminals) the critic's
  phi(s,a).phi(s',a') grows; DR3 (signed, c0 = 0.1) keeps it lower on the same data and seed."""
  def bootstrapped(task):
    arrays, source = regression_dataset(task)
    return dict(arrays, discount=np.ones_like(arrays["discount"])), source
  gin.parse_config(["DR3.reduction = 'mean'", "create_continuous_agent.critic_learning_rate = 1e-3"])
  final = {}
  for c0 in (0.0, 0.1):
    exp = experiment.ContinuousExperiment(seed=0, task="hopper-medium-v2", agent_name="sac",
                                          load_dataset=bootstrapped, batch_size=64, eval_episodes=0,
                                          dr3_coefficient=c0)
    dots = [float(exp.train_step()["dot_product"]) for _ in range(1500)]
    final[c0] = np.mean(dots[-100:])
  assert final[0.1] < 0.5 * final[0.0]
