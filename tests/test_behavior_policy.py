"""The TD-learning arm of the DR3 paper's Fig. 1: a' ~ pi_beta(.|s'), pi_beta cloned from the same data first."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3.agents import DQN
from batch_rl_dr3.agents.behavior_policy import BehaviorPolicy
from batch_rl_dr3.errors import ConfigError

NUM_ACTIONS = 4
FREQUENCIES = np.array([0.5, 0.3, 0.15, 0.05])


@pytest.fixture
def tiny_torso():
  """A 4-channel torso: the same code path as the Nature network, fast enough for hundreds of steps."""
  gin.clear_config()
  gin.bind_parameter("NatureTorso.filters", (4, 4, 4))
  gin.bind_parameter("NatureTorso.feature_dim", 16)
  yield
  gin.clear_config()


class ToySampler(tf.Module):
  """8 noise states; the logged action is drawn from FREQUENCIES whatever the state (a state-free behaviour)."""

  def __init__(self, batch_size=256, seed=0):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.states = tf.constant(rng.integers(0, 256, size=(8, 84, 84, 4)).astype(np.uint8))
    self.batch_size = batch_size
    self.rng = tf.random.Generator.from_seed(seed)

  def sample(self):
    idx = self.rng.uniform([self.batch_size], 0, 8, dtype=tf.int32)
    logits = tf.tile(tf.constant(np.log(FREQUENCIES)[None], tf.float32), [self.batch_size, 1])
    actions = tf.random.stateless_categorical(logits, 1, seed=self.rng.make_seeds(1)[:, 0])[:, 0]
    state = tf.gather(self.states, idx)
    return {"state": state, "next_state": tf.gather(self.states, (idx + 1) % 8),
            "action": tf.cast(actions, tf.int32), "next_action": tf.zeros([self.batch_size], tf.int32),
            "reward": tf.cast(idx, tf.float32) / 8.0 - 0.5, "terminal": tf.cast(idx == 7, tf.float32),
            "discount": 0.99 * (1.0 - tf.cast(idx == 7, tf.float32)),
            "return_to_go": tf.zeros([self.batch_size])}


def test_cloned_policy_samples_the_datas_action_frequencies(tiny_torso):
  sampler = ToySampler()
  policy = BehaviorPolicy(NUM_ACTIONS, pretrain_steps=1, learning_rate=1e-2)
  step = tf.function(lambda: policy.train_step(sampler.sample()))
  losses = [float(step()) for _ in range(300)]
  # The data's own frequencies (an independent count of what the sampler logs) ...
  logged = np.concatenate([sampler.sample()["action"].numpy() for _ in range(40)])
  data_freq = np.bincount(logged, minlength=NUM_ACTIONS) / len(logged)
  np.testing.assert_allclose(data_freq, FREQUENCIES, atol=0.02)
  # ... and the cross-entropy reached the data's entropy (the minimum for a state-free behaviour).
  entropy = -(FREQUENCIES * np.log(FREQUENCIES)).sum()
  assert abs(np.mean(losses[-50:]) - entropy) < 0.03 and losses[0] > entropy + 0.1
  # a' ~ pi_beta(.|s') at every state: 8 states x 2,500 draws; binomial std <= 0.0035 per frequency, and the
  # last Adam steps (lr 1e-2, batches of 256) leave pi_beta within ~0.03 of the data (a uniform policy, or the
  # argmax one, would be 0.2 or more away).
  states = tf.repeat(sampler.states, 2500, axis=0)
  drawn = policy.sample(states, tf.constant([1, 2], tf.int64)).numpy()
  assert drawn.dtype == np.int32 and drawn.shape == (20_000,)
  np.testing.assert_allclose(np.bincount(drawn, minlength=NUM_ACTIONS) / len(drawn), data_freq, atol=0.04)
  np.testing.assert_allclose(policy.probabilities(sampler.states).numpy(), np.tile(data_freq, (8, 1)), atol=0.05)
  assert int(policy.steps_done) == 300


def _huber(x):
  return np.where(np.abs(x) <= 1, 0.5 * x * x, np.abs(x) - 0.5)


def test_td_backup_bootstraps_from_the_cloned_policys_action(tiny_torso):
  gin.bind_parameter("BehaviorPolicy.pretrain_steps", 1)
  agent = DQN(NUM_ACTIONS, ToySampler(batch_size=16), backup="behavior_policy")
  # pi_beta(2 | s) = 1 everywhere: logits 0 but 60 for action 2 (exp(-60) underflows against 1 in float32).
  head = agent.behavior_policy.network.head
  head.kernel.assign(tf.zeros_like(head.kernel))
  head.bias.assign([0.0, 0.0, 60.0, 0.0])
  # The target's Q(s', 2) far below the others, so Q-learning's max never picks pi_beta's action, whatever the
  # (unseeded) initial weights: the three backups give clearly different targets.
  agent.target_network.head.bias.assign([0.0, 0.0, -5.0, 0.0])
  batch = agent.sampler.sample()
  _, metrics = agent.compute_loss(batch)
  q = agent.online_network(batch["state"]).q_values.numpy()
  q_next = agent.target_network(batch["next_state"]).q_values.numpy()
  rows, a = np.arange(16), batch["action"].numpy()
  reward, discount, terminal = (batch[k].numpy() for k in ("reward", "discount", "terminal"))

  def td_loss(next_values):
    return _huber(reward + discount * (1 - terminal) * next_values - q[rows, a]).mean()

  np.testing.assert_allclose(metrics["td_loss"], td_loss(q_next[:, 2]), rtol=1e-5)
  # Not the logged next action (SARSA's a' = 0 here) nor the max (Q-learning): the test can tell them apart.
  assert abs(td_loss(q_next[:, 0]) - td_loss(q_next[:, 2])) > 1e-3
  assert abs(td_loss(q_next.max(axis=1)) - td_loss(q_next[:, 2])) > 1e-3


def test_train_step_clones_the_policy_first_and_only_once(tiny_torso, tmp_path):
  gin.bind_parameter("BehaviorPolicy.pretrain_steps", 5)
  agent = DQN(NUM_ACTIONS, ToySampler(batch_size=8), backup="behavior_policy")
  before = [v.numpy().copy() for v in agent.behavior_policy.network.trainable_variables]
  agent.train_step()
  assert int(agent.behavior_policy.steps_done) == 5 and int(agent.gradient_steps) == 1
  after = [v.numpy().copy() for v in agent.behavior_policy.network.trainable_variables]
  assert any(np.abs(x - y).max() > 0 for x, y in zip(before, after))
  agent.train_step()
  assert int(agent.behavior_policy.steps_done) == 5 and int(agent.gradient_steps) == 2
  for x, y in zip(after, agent.behavior_policy.network.trainable_variables):  # frozen while Q trains
    np.testing.assert_array_equal(x, y.numpy())
  # Saved with the agent, so a resumed run does not clone again.
  path = tf.train.Checkpoint(agent=agent).write(str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(path)]
  assert any("behavior_policy/steps_done" in n for n in names), names
  with pytest.raises(ConfigError, match="pretrain_steps"):
    BehaviorPolicy(NUM_ACTIONS, pretrain_steps=0)


def test_multi_seed_step_clones_each_members_policy_and_distributed_refuses(tiny_torso):
  from batch_rl_dr3.distributed import DistributedTrainStep
  from batch_rl_dr3.multi_seed import MultiSeedStep
  gin.bind_parameter("BehaviorPolicy.pretrain_steps", 3)
  agents = [DQN(NUM_ACTIONS, ToySampler(batch_size=8, seed=s), backup="behavior_policy", seed=s) for s in (0, 1)]
  MultiSeedStep(agents)()
  assert [int(a.behavior_policy.steps_done) for a in agents] == [3, 3]
  assert [int(a.gradient_steps) for a in agents] == [1, 1]
  with pytest.raises(ConfigError, match="behavior_policy.*one device"):
    DistributedTrainStep(tf.distribute.get_strategy(), agents[0], 8)
