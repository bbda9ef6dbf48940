"""Learning checks on a tiny known MDP written in the real DQN Replay format and read by the real FixedReplay.

The MDP is a chain of K states s = 0..K-1 entered at s = 0. Action 1 moves right (reward 0), or at s = K-1
ends the episode with reward 1; action 0 ends the episode with reward 0. The behaviour policy that logged the
data is uniform. Each state has its own constant frame, so a frame stack identifies the state. Closed forms:
  optimal (Q-learning):        Q*(s, 1) = gamma^(K-1-s),                 Q*(s, 0) = 0
  behaviour (SARSA, MC):       Q_b(K-1, 1) = 1, Q_b(s, 1) = gamma * 0.5 * Q_b(s+1, 1),  Q_b(s, 0) = 0
Transitions go through Dopamine's own `OutOfGraphReplayBuffer.add` (episode padding and all) and are logged
when batch_rl's logger logged (add_count % capacity == capacity - 1).
"""
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3.agents import CQLQR, DQN, REM
from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data import fixed_replay
from tests import replay_fixtures

CHAIN = 3
GAMMA = 0.9
CAPACITY = 400


def chain_frame(state):
  return np.full(dqn_replay.OBSERVATION_SHAPE, 60 * (state + 1), np.uint8)


# Episodes as action sequences, cycled: at every state each action is taken equally often, so the empirical
# behaviour policy is exactly uniform (up to the cut at the end of the checkpoint).
BALANCED_EPISODES = [(0,)] * 4 + [(1, 0)] * 2 + [(1, 1, 0), (1, 1, 1)]


def write_chain_dataset(root):
  buffer = replay_fixtures._dopamine_buffer(CAPACITY, 4, 1, GAMMA)  # pylint: disable=protected-access
  episode = 0
  while int(buffer.add_count) % CAPACITY != CAPACITY - 1:
    for state, action in enumerate(BALANCED_EPISODES[episode % len(BALANCED_EPISODES)]):
      terminal = action == 0 or state == CHAIN - 1
      reward = 1.0 if (action == 1 and state == CHAIN - 1) else 0.0
      buffer.add(chain_frame(state), action, reward, int(terminal))
      if int(buffer.add_count) % CAPACITY == CAPACITY - 1:
        break  # the logger writes the checkpoint here, mid-episode or not
    episode += 1
  directory = str(root / "Chain" / "1" / "replay_logs")
  dqn_replay.save_checkpoint(directory, 0, replay_fixtures._checkpoint_arrays(buffer))  # pylint: disable=protected-access
  return directory


def closed_form(backup):
  q = np.zeros((CHAIN, 2))
  for s in reversed(range(CHAIN)):
    if backup == "q_learning":
      q[s, 1] = GAMMA ** (CHAIN - 1 - s)
    else:
      q[s, 1] = 1.0 if s == CHAIN - 1 else GAMMA * 0.5 * q[s + 1, 1]
  return q


def chain_states():
  """The frame stack the data holds for each state: zero padding, then the states walked through."""
  frames = [np.zeros(dqn_replay.OBSERVATION_SHAPE, np.uint8)] * 3 + [chain_frame(s) for s in range(CHAIN)]
  return np.stack([np.stack(frames[s:s + 4], axis=-1) for s in range(CHAIN)])


@pytest.fixture(scope="module")
def chain_replay(tmp_path_factory):
  directory = write_chain_dataset(tmp_path_factory.mktemp("chain"))
  return fixed_replay.FixedReplay.from_checkpoints(directory, [0], gamma=GAMMA)


def test_the_chain_data_reads_back_with_the_mdp_semantics(chain_replay):
  valid = chain_replay.valid_indices(0)
  batch = chain_replay.get_transitions(0, valid)
  states = chain_states()
  which = [int(np.argmax([np.array_equal(s, x) for x in states])) for s in batch["state"]]
  assert all(np.array_equal(states[w], s) for w, s in zip(which, batch["state"]))
  which, action = np.array(which), batch["action"]
  np.testing.assert_array_equal(batch["terminal"], (action == 0) | (which == CHAIN - 1))
  np.testing.assert_array_equal(batch["reward"], (action == 1) & (which == CHAIN - 1))
  np.testing.assert_allclose(batch["discount"], GAMMA * (1 - batch["terminal"]), rtol=1e-6)


def _learned_q(agent, steps):
  for _ in range(steps):
    metrics = agent.train_step()
  assert np.isfinite(float(metrics["total_loss"]))
  return agent.online_network(tf.constant(chain_states())).q_values.numpy()


# Faster than the paper's settings so that a few hundred steps of batch 16 converge on this tiny problem.
LEARNING_KWARGS = dict(learning_rate=5e-4, target_update_period=25)
STEPS, BATCH = 400, 16


@pytest.mark.parametrize("cls,kwargs", [
    (DQN, {}), (REM, {"num_heads": 4}), (CQLQR, {"num_quantiles": 8, "cql_alpha": 0.05})],
    ids=["dqn", "rem", "cql_qr"])
def test_each_agent_learns_the_optimal_q_values(chain_replay, cls, kwargs):
  tf.keras.utils.set_random_seed(0)  # network initialisation
  sampler = fixed_replay.InGraphSampler(chain_replay, batch_size=BATCH, seed=1)
  agent = cls(2, sampler, **LEARNING_KWARGS, **kwargs)
  q = _learned_q(agent, STEPS)
  np.testing.assert_allclose(q, closed_form("q_learning"), atol=0.1)


@pytest.mark.parametrize("backup", ["sarsa", "monte_carlo"])
def test_sarsa_and_monte_carlo_learn_the_behaviour_q_values(chain_replay, backup):
  tf.keras.utils.set_random_seed(0)
  sampler = fixed_replay.InGraphSampler(chain_replay, batch_size=BATCH, seed=2)
  agent = DQN(2, sampler, backup=backup, **LEARNING_KWARGS)
  q = _learned_q(agent, STEPS)
  # Monte-Carlo targets are single sampled returns (0 or 1 here), so SGD at this step size jitters more.
  np.testing.assert_allclose(q, closed_form(backup), atol=0.1 if backup == "sarsa" else 0.15)


def _mean_dot_product(agent, steps, window=100):
  dots = [float(agent.train_step()["dot_product"]) for _ in range(steps)]
  return float(np.mean(dots[:window])), float(np.mean(dots[-window:]))


@pytest.mark.slow
def test_fig1_in_small_feature_co_adaptation(chain_replay):
  """DR3 paper Fig. 1 in small: phi(s).phi(s') grows under TD with the max backup (offline DQN), stays lower
  under SARSA and Monte-Carlo regression, and DR3 (Dopamine's form, c0 = 0.1) keeps it near zero."""
  from batch_rl_dr3.regularizers import DR3
  results = {}
  for name, kwargs in [("q_learning", {}), ("sarsa", {"backup": "sarsa"}),
                       ("monte_carlo", {"backup": "monte_carlo"}), ("q_learning+dr3", {"penalties": [DR3(0.1, reduction="mean", use_abs=True)]})]:
    tf.keras.utils.set_random_seed(0)
    sampler = fixed_replay.InGraphSampler(chain_replay, batch_size=32, seed=3)
    # The dot product every step (the default computes it every 32nd step when no penalty needs phi(s')).
    agent = DQN(2, sampler, learning_rate=5e-4, target_update_period=100, next_state_metrics_every=1, **kwargs)
    results[name] = _mean_dot_product(agent, 1200)
  first, last = results["q_learning"]
  assert last > 2.0 * first
  assert last > 1.5 * results["sarsa"][1] and last > 1.5 * results["monte_carlo"][1]
  assert results["q_learning+dr3"][1] < 0.25 * last
