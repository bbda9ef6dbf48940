"""Random Ensemble Mixture (REM, Agarwal et al. 2020): Huber TD on a random convex mixture of K Q-heads."""
import gin
import tensorflow as tf

from batch_rl_dr3 import losses
from batch_rl_dr3 import networks
from batch_rl_dr3.agents.offline_agent import OfflineAgent


@gin.configurable
class REM(OfflineAgent):
  """Q_w = sum_k w_k Q_k with w = u / sum(u), u ~ U(0,1)^K drawn fresh each step and shared by the online and
  target networks (batch_rl `multi_head`); Huber(r + gamma^n Q_w,target(s', a') - Q_w(s, a)). Acting and the
  metrics use the mean over heads."""

  def __init__(self, num_actions, sampler, num_heads: int = 200, **kwargs):
    self.num_heads = int(num_heads)
    super().__init__(num_actions, sampler, **kwargs)

  def hyperparameters(self):
    return {**super().hyperparameters(), "num_heads": self.num_heads}

  def make_network(self, num_actions, name):
    return networks.MultiHeadQNetwork(num_actions, num_heads=self.num_heads, name=name)

  def draw_head_weights(self):
    return losses.rem_mixture_weights(self.rng.uniform([self.num_heads]))

  def acting_q(self, output, head_weights=None):
    if head_weights is None:
      return output.q_values
    return losses.mix_heads(output.heads, head_weights)

  def algorithm_loss(self, batch, online, target_next, next_actions, head_weights):
    chosen_q = losses.select_actions(losses.mix_heads(online.heads, head_weights), batch["action"])
    if self.backup == "monte_carlo":
      per_example = losses.mc_regression_loss(chosen_q, batch["return_to_go"], self.huber_delta)
      return per_example, {"mc_loss": tf.reduce_mean(per_example)}
    next_q = losses.select_actions(losses.mix_heads(target_next.heads, head_weights), next_actions)
    target = losses.bootstrap_target(batch["reward"], batch["discount"], batch["terminal"], next_q)
    per_example = losses.td_huber_loss(chosen_q, target, self.huber_delta)
    return per_example, {"td_loss": tf.reduce_mean(per_example)}
