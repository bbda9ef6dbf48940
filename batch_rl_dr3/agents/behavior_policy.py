"""The behaviour policy pi_beta learned from the dataset by behaviour cloning, for the DR3 paper's TD-learning arm.

The DR3 paper, Sec. 3.1 (Fig. 1): "The TD-learning variant also aims to estimate the value of the behavior
policy, but utilizes an action a' sampled from the learned behavior policy pi_beta, a' ~ pi_beta(.|s')". The
backup `behavior_policy` of `OfflineAgent` samples a' from this module.

How pi_beta is learned: a classifier of the dataset action given the state (softmax cross-entropy, the Nature
torso with one logit per action), trained on batches of the same dataset the Q-function trains on, **before**
the Q-function (`pretrain_steps` steps, then frozen). Why first rather than alongside: the TD arm must estimate
the value of one fixed policy, as offline SARSA does, so that the only difference between the two arms is the
one the paper isolates (a' out of sample, drawn from pi_beta, against the logged a'); a pi_beta still moving
while Q trains would make the target a moving policy-evaluation problem, a confound. It is also how BRAC
(Wu et al. 2019) uses its behaviour policy: pre-trained on the data, then held fixed.

`pretrain_steps`, `learning_rate`: the paper's appendix (not available here) does not give them; the defaults
are a documented choice (Adam at the agents' 5e-5 of Agarwal et al. 2020; 20,000 steps, where the
toy-data test's cross-entropy has converged many times over) and `pretrain_steps` is a sweep axis of
`launch/sweeps/fig1.toml`.
"""
from typing import Dict, Optional

import gin
import tensorflow as tf

from batch_rl_dr3 import networks
from batch_rl_dr3.errors import ConfigError


@gin.configurable
class BehaviorPolicy(tf.Module):
  """pi_beta(a | s) as logits over the discrete actions; `sample(states, seed)` draws a' ~ pi_beta(. | s)."""

  def __init__(self, num_actions: int, *, pretrain_steps: int = 20_000, learning_rate: float = 5e-5,
               adam_epsilon: float = 3.125e-4, name: Optional[str] = "behavior_policy"):
    super().__init__(name=name)
    if pretrain_steps < 1:
      raise ConfigError(f"BehaviorPolicy.pretrain_steps={pretrain_steps}; expected >= 1 (the TD-learning backup "
                        f"needs a trained pi_beta)")
    self.num_actions = int(num_actions)
    self.pretrain_steps = int(pretrain_steps)
    self.network = networks.DQNNetwork(self.num_actions, name="bc_network")  # its outputs are the logits
    self.network(tf.zeros((1, 84, 84, 4), tf.uint8))  # Atari states: 4 stacked 84x84 frames
    self.optimizer = tf.keras.optimizers.legacy.Adam(learning_rate=learning_rate, epsilon=adam_epsilon)
    self.optimizer._create_all_weights(self.network.trainable_variables)  # pylint: disable=protected-access
    # Steps of behaviour cloning done: saved with the agent, so a resumed run never trains pi_beta twice.
    self.steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="bc_steps_done")

  def logits(self, states) -> tf.Tensor:
    return self.network(states).q_values

  def probabilities(self, states) -> tf.Tensor:
    return tf.nn.softmax(self.logits(states), axis=-1)

  def loss(self, batch: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Mean cross-entropy of the dataset actions under pi_beta (behaviour cloning)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(batch["action"], tf.int32), logits=self.logits(batch["state"])))

  def train_step(self, batch: Dict[str, tf.Tensor]) -> tf.Tensor:
    with tf.GradientTape() as tape:
      loss = self.loss(batch)
    variables = self.network.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    self.steps_done.assign_add(1)
    return loss

  def sample(self, states, seed) -> tf.Tensor:
    """a' ~ pi_beta(. | s) int32 [B]; `seed` is a stateless-random seed (int32/int64 [2]), no gradient."""
    logits = tf.stop_gradient(self.logits(states))
    return tf.cast(tf.random.stateless_categorical(logits, 1, seed=seed)[:, 0], tf.int32)
