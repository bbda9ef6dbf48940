"""Explicit regularizers of Q-networks: DR3 (Kumar et al., ICLR 2022) and its neighbours, as penalty objects.

DR3 as the paper writes it (Eq. 7, "Explicit DR3 regularizer : Rexp(theta) = sum_{i in D} phi(s_i,a_i)^T
phi(s'_i,a'_i)"), added as L(theta) = L_ALG(theta) + c0 * Rexp(theta), with phi the penultimate features of the
*online* Q-network and a' the action the backup uses (argmax for Q-learning, the dataset action for SARSA, the
policy action in actor-critic); "we drop the stop gradient on Q(s',a') ... as it performs slightly better".

Public implementations differ in reduction (sum / mean over the batch), in taking |.| of each dot product
(Dopamine's DR3 agent) or not (the paper, COG+DR3), in stopping the gradient through phi(s',a') and in masking
terminal transitions, so c0 values do not transfer between them. `dr3_penalty` takes every one of those choices
as an argument.

Penalty objects (DESIGN.md, "Penalties are objects"). An agent takes a list of `Penalty` objects (gin:
`OfflineAgent.penalties = [@DR3()]`). Each one owns
  * its formula: `value(inputs)`, the scalar before the coefficient, from a `PenaltyInputs`;
  * its coefficient: a non-trainable tf.Variable (`coefficient`), so changing it never retraces a compiled step
    and c0 = 0 gives the same parameters as no penalty;
  * its metrics: `metrics(value, inputs)`, {name: scalar} written to metrics.csv as train/<name>;
  * its part of the run's label: `label_name` and `label_settings()` (see `batch_rl_dr3.labels`).
A new regularizer is one subclass here and one gin line.
"""
import dataclasses
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import gin
import tensorflow as tf

REDUCTIONS = ("mean", "sum")


def feature_dot_products(features, next_features):
  """Per-transition dot products phi(s,a) . phi(s',a'): [B, d] x [B, d] -> [B]."""
  return tf.reduce_sum(features * next_features, axis=-1)


@gin.configurable(denylist=["features", "next_features", "mask"])
def dr3_penalty(features, next_features, *, reduction="mean", use_abs=True,
                stop_gradient_next=False, mask=None):
  """DR3 penalty before its coefficient c0.

  Args:
    features: [B, d] phi(s, a) of the online network.
    next_features: [B, d] phi(s', a') of the online network, a' the action used by the backup.
    reduction: 'mean' (Dopamine's agent; c0 independent of batch size) or 'sum' (the paper's equation).
    use_abs: take |phi(s).phi(s')| per transition (Dopamine's DR3 agent) instead of the signed value.
    stop_gradient_next: treat phi(s',a') as a constant (COG+DR3); the paper found gradients through
      both sides slightly better, hence False by default.
    mask: optional [B] weights, e.g. (1 - terminal) to drop transitions whose s' is not bootstrapped.
      Masked transitions count as zero; the mean still divides by B (as PTR's implementation does).
  Returns:
    A scalar tensor.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"dr3_penalty: reduction={reduction!r}; expected one of {REDUCTIONS}")
  if stop_gradient_next:
    next_features = tf.stop_gradient(next_features)
  dots = feature_dot_products(features, next_features)
  if use_abs:
    dots = tf.abs(dots)
  if mask is not None:
    dots = dots * tf.cast(mask, dots.dtype)
  return tf.reduce_mean(dots) if reduction == "mean" else tf.reduce_sum(dots)


def gram_eigenvalues(features):
  """Squared singular values of the feature matrix Phi [B, d], from the smaller of Phi Phi^T and Phi^T Phi.

  eigvalsh of a min(B, d)-square Gram matrix is cheaper than an SVD, compiles under XLA and has a gradient,
  and its eigenvalues are exactly sigma_i(Phi)^2 (ascending).
  """
  batch, dim = features.shape[-2], features.shape[-1]
  if batch is not None and dim is not None and batch > dim:
    gram = tf.matmul(features, features, transpose_a=True)
  else:
    gram = tf.matmul(features, features, transpose_b=True)
  return tf.maximum(tf.linalg.eigvalsh(gram), 0.0)


@gin.configurable(denylist=["features"])
def srank_penalty(features):
  """The rank-collapse penalty of Kumar et al. 2021 ("Implicit Under-Parameterization Inhibits Data-Efficient
  Deep RL", ICLR 2021, Sec. 5): sigma_max(Phi)^2 - sigma_min(Phi)^2 of the batch feature matrix Phi [B, d].

  Minimising it shrinks the largest singular value and lifts the smallest, the direction that keeps srank up
  (the paper's own sign convention for this term was not re-checked here; this is the sign that, added to
  the loss with a positive weight, counters rank collapse). Before its coefficient; a scalar.
  """
  squared_singular_values = gram_eigenvalues(features)
  return squared_singular_values[-1] - squared_singular_values[0]


# ---- penalty objects -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PenaltyInputs:
  """What a penalty may read, given by the agent (both domains fill the same fields).

  Attributes:
    features: [B, d] phi(s, a) of the online network (gradient flows).
    next_features: [B, d] phi(s', a') of the online network, a' the backup's action; None when the agent did not
      compute them (only when no penalty has `needs_next_features`).
    mask: [B] 1 where s' is bootstrapped, 0 where it is a placeholder after a terminal (1 - terminal).
    discount: [B] the backup's discount gamma^n (0 after a terminal), for penalties that model the TD update.
    q_fn: () -> (Q(s, a) [B], Q(s', a') [B]) of the online network, recomputed from the parameters each call:
      per-example parameter gradients (the full-gradient and label-noise forms over parameters) differentiate it.
    variables: the parameters theta of Q that `q_fn` depends on (the agent's trainable weights).
  """
  features: tf.Tensor
  next_features: Optional[tf.Tensor] = None
  mask: Optional[tf.Tensor] = None
  discount: Optional[tf.Tensor] = None
  q_fn: Optional[Callable[[], Tuple[tf.Tensor, tf.Tensor]]] = None
  variables: Optional[Sequence[tf.Variable]] = None


class Penalty(tf.Module):
  """Base class of a regularizer added to an agent's loss as coefficient * value(inputs).

  Subclasses set `label_name` (the run label's '+NAME' part), `metric_name` (train/<metric_name> is the value
  before the coefficient), `needs_next_features`, `batch_reduction` ('mean': a batch mean, scaled by the local
  share of the global batch under tf.distribute; 'sum': a batch sum, summed over replicas as is), and `value`.
  Constructor arguments other than `coefficient` and `name` are the penalty's form: `label_settings` reports
  those that differ from the class defaults, plus c0 always.
  """
  label_name = "penalty"
  metric_name = "penalty"
  needs_next_features = False

  def __init__(self, coefficient: float = 0.0, name: Optional[str] = None):
    super().__init__(name=name or type(self).__name__)
    self.coefficient = tf.Variable(float(coefficient), trainable=False, name="coefficient")

  @property
  def batch_reduction(self) -> str:
    return "mean"

  def value(self, inputs: PenaltyInputs) -> tf.Tensor:
    """The scalar penalty before its coefficient."""
    raise NotImplementedError

  def metrics(self, value: tf.Tensor, inputs: PenaltyInputs) -> Dict[str, tf.Tensor]:
    """{metric name: scalar} logged each step (default: the value before the coefficient)."""
    del inputs
    return {self.metric_name: value}

  def loss(self, inputs: PenaltyInputs, local_share=1.0) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """(coefficient * value, scaled for this replica's share of a distributed batch; metrics)."""
    value = self.value(inputs)
    scale = local_share if self.batch_reduction == "mean" else 1.0
    return self.coefficient * value * scale, self.metrics(value, inputs)

  # ---- label ----
  def form(self) -> Dict[str, Any]:
    """The penalty's form: its constructor arguments except coefficient and name (subclasses list them)."""
    return {}

  @classmethod
  def default_form(cls) -> Dict[str, Any]:
    """The class defaults of `form()`'s entries (from the constructor signature)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in parameters.items()
            if k not in ("self", "coefficient", "name") and p.default is not inspect.Parameter.empty}

  def label_settings(self) -> Dict[str, Any]:
    """{setting: value} shown in the run's label: c0, then every form entry that differs from the default."""
    defaults = self.default_form()
    settings = {"c0": float(self.coefficient.numpy())}
    settings.update({k: v for k, v in self.form().items() if defaults.get(k, object()) != v})
    return settings


# Named public forms of DR3 (reduction, use_abs, stop_gradient_next, mask_terminal), for labels and configs.
DR3_FORMS = {
    # The paper, Eq. 7: signed, summed over the batch, gradient through both sides, no mask.
    "paper": ("sum", False, False, False),
    # google/dopamine labs/offline_rl/jax/offline_dr3_agent.py: mean over the batch of |phi(s).phi(s')|.
    "dopamine": ("mean", True, False, False),
    # Asap7772/cog rlkit/torch/sac/cql.py: signed batch mean, next-state features detached.
    "cog": ("mean", False, True, False),
    # Asap7772/PTR (jaxrl2): signed batch mean of mask * phi(s).phi(s'), gradient through both sides.
    "ptr": ("mean", False, False, True),
}


@gin.configurable
class DR3(Penalty):
  """DR3 on penultimate features: `dr3_penalty(phi(s,a), phi(s',a'))` in any public form.

  The defaults are the paper's Eq. 7 (sum over the batch, signed, gradient through both sides, no mask); the
  other named forms are in `DR3_FORMS` (e.g. Dopamine's: reduction='mean', use_abs=True). mask_terminal weights
  each transition by (1 - terminal), dropping dot products with the placeholder s' after a terminal.
  """
  label_name = "DR3"
  metric_name = "dr3"
  needs_next_features = True

  def __init__(self, coefficient: float = 0.0, reduction: str = "sum", use_abs: bool = False,
               stop_gradient_next: bool = False, mask_terminal: bool = False, name: Optional[str] = None):
    super().__init__(coefficient, name)
    if reduction not in REDUCTIONS:
      raise ValueError(f"DR3.reduction={reduction!r}; expected one of {REDUCTIONS}")
    self.reduction = reduction
    self.use_abs = bool(use_abs)
    self.stop_gradient_next = bool(stop_gradient_next)
    self.mask_terminal = bool(mask_terminal)

  @property
  def batch_reduction(self) -> str:
    return self.reduction

  def value(self, inputs):
    return dr3_penalty(inputs.features, inputs.next_features, reduction=self.reduction, use_abs=self.use_abs,
                       stop_gradient_next=self.stop_gradient_next,
                       mask=inputs.mask if self.mask_terminal else None)

  def form(self):
    return {"reduction": self.reduction, "use_abs": self.use_abs, "stop_gradient_next": self.stop_gradient_next,
            "mask_terminal": self.mask_terminal}

  def form_name(self) -> Optional[str]:
    """The name of this form in DR3_FORMS, or None for an unnamed combination."""
    key = (self.reduction, self.use_abs, self.stop_gradient_next, self.mask_terminal)
    return next((name for name, form in DR3_FORMS.items() if form == key), None)

  def label_settings(self):
    name = self.form_name()
    if name is None:
      return super().label_settings()
    settings = {"c0": float(self.coefficient.numpy())}
    if name != "paper":
      settings["form"] = name
    return settings


@gin.configurable
class SrankPenalty(Penalty):
  """Kumar et al. 2021's rank-collapse penalty on the batch features, `srank_penalty(phi(s,a))`."""
  label_name = "srank"
  metric_name = "srank_penalty"

  def value(self, inputs):
    return srank_penalty(inputs.features)
