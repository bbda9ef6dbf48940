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


def dr3_penalty(features, next_features, *, reduction, use_abs, stop_gradient_next, mask=None):
  """DR3 penalty before its coefficient c0.

  Args:
    features: [B, d] phi(s, a) of the online network.
    next_features: [B, d] phi(s', a') of the online network, a' the action used by the backup.
    reduction: 'mean' (Dopamine's agent; c0 independent of batch size) or 'sum' (the paper's equation).
  Not a gin configurable: the form is bound on the `DR3` penalty object (one place for it).
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

  def __init__(self, coefficient: float = 0.0, name: Optional[str] = None, reduction: str = "mean"):
    super().__init__(name=name or type(self).__name__)
    if reduction not in REDUCTIONS:
      raise ValueError(f"{type(self).__name__}.reduction={reduction!r}; expected one of {REDUCTIONS}")
    self.coefficient = tf.Variable(float(coefficient), trainable=False, name="coefficient")
    self.reduction = reduction

  @property
  def batch_reduction(self) -> str:
    """'mean' or 'sum': how the penalty reduces over the batch (its distributed scaling follows)."""
    return self.reduction

  def value(self, inputs: PenaltyInputs) -> tf.Tensor:
    """The scalar penalty before its coefficient."""
    raise NotImplementedError

  def metrics(self, value: tf.Tensor, inputs: PenaltyInputs) -> Dict[str, tf.Tensor]:
    """{metric name: scalar} logged each step (default: the value before the coefficient)."""
    del inputs
    return {self.metric_name: value}

  def evaluate(self, inputs: PenaltyInputs) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """(value, metrics); a subclass whose metrics share work with its value overrides this."""
    value = self.value(inputs)
    return value, self.metrics(value, inputs)

  def loss(self, inputs: PenaltyInputs, local_share=1.0) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """(coefficient * value, scaled for this replica's share of a distributed batch; metrics)."""
    value, metrics = self.evaluate(inputs)
    scale = local_share if self.batch_reduction == "mean" else 1.0
    return self.coefficient * value * scale, metrics

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
    super().__init__(coefficient, name, reduction)
    self.use_abs = bool(use_abs)
    self.stop_gradient_next = bool(stop_gradient_next)
    self.mask_terminal = bool(mask_terminal)

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


def _reduce_batch(values, reduction: str, mask=None):
  if mask is not None:
    values = values * tf.cast(mask, values.dtype)
  return tf.reduce_mean(values) if reduction == "mean" else tf.reduce_sum(values)


def per_example_gradient_dot_products(q_fn, variables, stop_gradient_next: bool = False):
  """[B] grad_theta Q(s_i, a_i) . grad_theta Q(s'_i, a'_i), summed over all `variables`.

  q_fn() -> (Q(s, a) [B], Q(s', a') [B]), recomputed inside a tape; per-example gradients come from one
  vectorized Jacobian of the 2B outputs. Differentiable w.r.t. the variables (a second-order term), unless
  stop_gradient_next treats grad Q(s', a') as a constant (the theorem's [[.]]).
  """
  variables = list(variables)
  with tf.GradientTape() as tape:
    q, q_next = q_fn()
    both = tf.concat([q, q_next], axis=0)
  jacobians = tape.jacobian(both, variables, experimental_use_pfor=True)
  size = tf.shape(q)[0]
  dots = tf.zeros_like(q)
  for jacobian in jacobians:
    flat = tf.reshape(jacobian, [2 * size, -1])
    current, following = flat[:size], flat[size:]
    if stop_gradient_next:
      following = tf.stop_gradient(following)
    dots += tf.reduce_sum(current * following, axis=1)
  return dots


@gin.configurable
class FullGradientDR3(Penalty):
  """The explicit regularizer over ALL parameters (the paper's Delta(theta) with Sigma_M = I):
  sum_i grad_theta Q(s_i,a_i)^T grad_theta Q(s'_i,a'_i), of which DR3 (Eq. 7) is the last-layer approximation
  ("we instead approximate Delta(theta) with the contribution only from the last layer parameters"). Costly: one
  per-example Jacobian of Q over the parameters per step. Needs `PenaltyInputs.q_fn` and `.variables`.
  Same reduction / stop-gradient / mask options as DR3 (defaults: the paper's sum, gradient through both).
  """
  label_name = "DR3-fullgrad"
  metric_name = "dr3_full_gradient"

  def __init__(self, coefficient: float = 0.0, reduction: str = "sum", stop_gradient_next: bool = False,
               mask_terminal: bool = False, name: Optional[str] = None):
    super().__init__(coefficient, name, reduction)
    self.stop_gradient_next = bool(stop_gradient_next)
    self.mask_terminal = bool(mask_terminal)

  def value(self, inputs):
    if inputs.q_fn is None or inputs.variables is None:
      raise ValueError("FullGradientDR3 needs PenaltyInputs.q_fn and .variables (Q as a function of theta)")
    dots = per_example_gradient_dot_products(inputs.q_fn, inputs.variables, self.stop_gradient_next)
    return _reduce_batch(dots, self.reduction, inputs.mask if self.mask_terminal else None)

  def form(self):
    return {"reduction": self.reduction, "stop_gradient_next": self.stop_gradient_next,
            "mask_terminal": self.mask_terminal}


def solve_discrete_lyapunov(a, q):
  """X with X = a X a^T + q, for small square float64 a, q ([r, r]), from the Kronecker form
  (I - a (x) a) vec(X) = vec(q): the unique solution whenever no two eigenvalues of a multiply to 1 (when a is
  stable it is the series sum_k a^k q (a^T)^k; scipy.linalg.solve_discrete_lyapunov solves the same equation).
  One r^2 x r^2 linear solve; compiles under XLA."""
  r = tf.shape(a)[0]
  kron = tf.reshape(tf.einsum("ij,kl->ikjl", a, a), [r * r, r * r])
  x = tf.linalg.solve(tf.eye(r * r, dtype=a.dtype) - kron, tf.reshape(q, [r * r, 1]))
  return tf.reshape(x, [r, r])


def label_noise_sigma_factors(features, next_features, discount, eta: float, rank_tolerance: float = 1e-6):
  """Sigma*_M of the paper's Theorem 3.1 for label noise on the last layer, as factors: Sigma* = U X U^T with
  U = Phi^T W ([d, B], orthonormal columns spanning the batch's features, zero columns where Phi is rank
  deficient) and X [B, B] (float64, no gradient). Sigma* is the fixed point of the discrete Lyapunov equation

    Sigma* = (I - eta G) Sigma* (I - eta G)^T + eta^2 M,   M = sum_i phi_i phi_i^T  (label noise, Blanc et al.),
    G = sum_i phi_i (phi_i - gamma_i phi'_i)^T  (the pseudo-Hessian of linear TD on the features),

  phi_i = phi(s_i, a_i), phi'_i = phi(s'_i, a'_i), gamma_i the transition's discount (0 after a terminal). G and M
  map into the span of the phi_i and that span is invariant under I - eta G, so the equation is solved there
  (U^T (I - eta G) U and U^T M U are B x B); outside it the fixed point is 0. Directions with a Gram eigenvalue
  below rank_tolerance x the largest (duplicate or collinear features) are dropped.
  """
  phi = tf.cast(tf.stop_gradient(features), tf.float64)
  phi_next = tf.cast(tf.stop_gradient(next_features), tf.float64)
  gamma = tf.cast(tf.stop_gradient(discount), tf.float64)[:, None]
  gram = tf.matmul(phi, phi, transpose_b=True)                          # Phi Phi^T [B, B]
  eigenvalues, eigenvectors = tf.linalg.eigh(gram)
  keep = eigenvalues > rank_tolerance * tf.reduce_max(eigenvalues)
  scale = tf.where(keep, tf.math.rsqrt(tf.where(keep, eigenvalues, 1.0)), 0.0)
  w = eigenvectors * scale[None, :]                                      # U = Phi^T W, U^T U = diag(keep)
  keep = tf.cast(keep, tf.float64)
  eta = tf.constant(eta, tf.float64)
  # U^T (I - eta Phi^T D) U = diag(keep) - eta W^T (Phi Phi^T) D Phi^T W, with D = Phi - gamma Phi'.
  td_direction = phi - gamma * phi_next
  a = tf.linalg.diag(keep) - eta * tf.matmul(
      tf.matmul(w, gram, transpose_a=True), tf.matmul(tf.matmul(td_direction, phi, transpose_b=True), w))
  q = eta ** 2 * tf.linalg.diag(keep * tf.where(keep > 0, eigenvalues, 0.0))  # U^T M U = diag(lambda)
  return w, solve_discrete_lyapunov(a, q)


def label_noise_sigma(features, next_features, discount, eta: float, rank_tolerance: float = 1e-6):
  """Sigma*_M as a d x d float64 matrix (see `label_noise_sigma_factors`; for inspection and tests)."""
  w, x = label_noise_sigma_factors(features, next_features, discount, eta, rank_tolerance)
  u = tf.matmul(tf.cast(tf.stop_gradient(features), tf.float64), w, transpose_a=True)
  return tf.matmul(tf.matmul(u, x), u, transpose_b=True)


@gin.configurable
class LabelNoiseDR3(Penalty):
  """The explicit regularizer with Sigma*_M induced by label noise (the paper's Fig. 6, "M induced by label
  noise ... for which we need to run computationally heavy fixed-point computation") instead of Sigma_M = I:

    sum_i phi(s_i,a_i)^T Sigma phi(s'_i,a'_i),   Sigma = (2 / eta) Sigma*_M   (`label_noise_sigma_factors`),

  on the last layer, as DR3. The 2 / eta normalization is ours: with gamma = 0 (supervised regression),
  (2 / eta) Sigma*_M is, to first order in eta, the projection onto the span of the features, so the penalty
  equals DR3 (Sigma_M = I) there and c0 values are comparable. eta is Eq. 3's step size (default: the Atari
  agents' learning rate 5e-5). Sigma is recomputed from each batch (a B^2 x B^2 solve) with no gradient through it.
  When TD on the batch's features is unstable (Prop. 3.2's regime) the equation's solution is no longer the
  limit of the noise's covariance; it is still the fixed point, and `label_noise_sigma_trace` (trace of Sigma)
  shows its scale. Needs PenaltyInputs.discount.
  """
  label_name = "DR3-labelnoise"
  metric_name = "dr3_label_noise"
  needs_next_features = True

  def __init__(self, coefficient: float = 0.0, eta: float = 5e-5, reduction: str = "sum",
               name: Optional[str] = None):
    super().__init__(coefficient, name, reduction)
    if not eta > 0:
      raise ValueError(f"LabelNoiseDR3.eta={eta}; expected > 0")
    self.eta = float(eta)

  def _value_and_trace(self, inputs):
    if inputs.discount is None:
      raise ValueError("LabelNoiseDR3 needs PenaltyInputs.discount")
    w, x = label_noise_sigma_factors(inputs.features, inputs.next_features, inputs.discount, self.eta)
    dtype = inputs.features.dtype
    # phi_i^T U X U^T phi'_i with U = Phi^T W (Phi without gradient): gradients reach phi and phi' only.
    basis = tf.cast(tf.matmul(tf.cast(tf.stop_gradient(inputs.features), tf.float64), w, transpose_a=True), dtype)
    left = tf.matmul(tf.matmul(inputs.features, basis), tf.cast((2.0 / self.eta) * x, dtype))
    dots = tf.reduce_sum(left * tf.matmul(inputs.next_features, basis), axis=1)
    return _reduce_batch(dots, self.reduction), (2.0 / self.eta) * tf.linalg.trace(x)

  def value(self, inputs):
    return self._value_and_trace(inputs)[0]

  def evaluate(self, inputs):
    value, trace = self._value_and_trace(inputs)
    return value, {self.metric_name: value, "label_noise_sigma_trace": tf.cast(trace, tf.float32)}

  def form(self):
    return {"eta": self.eta, "reduction": self.reduction}
