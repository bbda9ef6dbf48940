"""One rule for a run's label, the name the report groups runs under (both domains and the report use it).

A label is the agent's display name, '+NAME' for each penalty, and in parentheses every setting that differs
from the agent's defaults together with each penalty's settings (its c0 always, its form when not the default):

    CQL                                   CQL-QR with the defaults (CQL alpha: its data setting's default)
    CQL+DR3 (c0=0.03)                     + DR3 in the paper's Eq. 7 form
    CQL+DR3 (c0=0.1, form=dopamine)       + DR3 in Dopamine's public form
    CQL (cql_alpha=0.1)                   a CQL alpha other than the data setting's default
    DQN (backup=sarsa)                    offline SARSA

so runs that differ in DR3 form, c0, CQL alpha, backup or any other hyper-parameter of the agent get different
labels and are never pooled. An explicit label (e.g. `AtariExperiment.label`) wins over the derived one.

An experiment stores `label_parts` (agent, differing settings, penalties) in run_info.json beside the label, so
the report derives the same label for a run folder that has none (`label_from_run_info`).
"""
import inspect
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

# Display names of the agents of both domains.
AGENT_NAMES = {"dqn": "DQN", "rem": "REM", "cql_qr": "CQL", "sac": "SAC", "cql_sac": "CQL", "brac": "BRAC",
               "rebrac": "ReBRAC", "iql": "IQL"}

# Constructor arguments that never change what is learned (or are passed by the caller, not chosen).
NOT_SETTINGS = frozenset({"self", "num_actions", "sampler", "penalties", "next_state_metrics",
                          "next_state_metrics_every", "jit_compile",
                          "cql_alpha_by_setting",
                          "seed", "name", "data_setting", "args", "kwargs"})


def function_defaults(fn) -> Dict[str, Any]:
  """{argument: default} of a function's signature, without NOT_SETTINGS."""
  return {name: parameter.default for name, parameter in inspect.signature(fn).parameters.items()
          if name not in NOT_SETTINGS and parameter.default is not inspect.Parameter.empty}


def constructor_defaults(cls) -> Dict[str, Any]:
  """{argument: default} over the __init__ signatures of `cls` and its bases (a subclass's default wins)."""
  defaults: Dict[str, Any] = {}
  for klass in reversed(cls.__mro__):
    if "__init__" in klass.__dict__ and klass is not object:
      defaults.update(function_defaults(klass.__dict__["__init__"]))
  return defaults


def _same(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    try:
      return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)  # float32 variables
    except (TypeError, ValueError):
      return False
  return a == b


def differing(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
  """The entries of `values` that have no default or differ from it."""
  missing = object()
  return {k: v for k, v in values.items() if k not in NOT_SETTINGS
          and (defaults.get(k, missing) is missing or not _same(defaults[k], v))}


def format_value(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return "+".join(format_value(v) for v in value)
  return str(value)


def label_parts(values: Mapping[str, Any], defaults: Mapping[str, Any], penalties: Sequence[Any] = ()
                ) -> Dict[str, Any]:
  """The JSON-able record a label is derived from: settings differing from the defaults, and per penalty
  [label_name, its label settings] (penalties: `regularizers.Penalty` objects)."""
  return {"settings": differing(values, defaults),
          "penalties": [[p.label_name, dict(p.label_settings())] for p in penalties]}


def run_label(agent: str, settings: Optional[Mapping[str, Any]] = None,
              penalties: Sequence[Tuple[str, Mapping[str, Any]]] = (), label: Optional[str] = None) -> str:
  """THE label rule. agent: its short name ('cql_qr', 'cql_sac', ...); settings: those differing from the
  agent's defaults (`differing`); penalties: (label_name, label settings) each; label: an explicit label,
  which wins when given."""
  if label:
    return str(label)
  base = AGENT_NAMES.get(agent, str(agent)) + "".join(f"+{name}" for name, _ in penalties)
  parts = [f"{k}={format_value(v)}" for k, v in sorted((settings or {}).items())]
  with_settings = sum(1 for _, penalty_settings in penalties if penalty_settings)
  for name, penalty_settings in penalties:
    prefix = "" if with_settings <= 1 else f"{name}."
    parts += [f"{prefix}{k}={format_value(v)}" for k, v in penalty_settings.items()]
  return base + (f" ({', '.join(parts)})" if parts else "")


def label_from_parts(agent: str, parts: Mapping[str, Any], label: Optional[str] = None) -> str:
  """`run_label` of a `label_parts` record."""
  penalties = [(name, settings) for name, settings in parts.get("penalties", [])]
  return run_label(agent, parts.get("settings", {}), penalties, label=label)


def label_from_run_info(info: Mapping[str, Any]) -> Optional[str]:
  """The label of a run folder's run_info.json: its explicit 'label', else derived from 'label_parts', else
  (run folders written before label_parts existed) from 'agent', 'dr3_coefficient' and 'backup'.
  None when the info names no agent."""
  if info.get("label"):
    return str(info["label"])
  agent = info.get("agent")
  if not agent:
    return None
  if isinstance(info.get("label_parts"), Mapping):
    return label_from_parts(agent, info["label_parts"])
  settings = {}
  if info.get("backup") not in (None, "q_learning"):
    settings["backup"] = info["backup"]
  c0 = float(info.get("dr3_coefficient") or 0.0)
  return run_label(agent, settings, [("DR3", {"c0": c0})] if c0 > 0 else [])


def distinct_derived_labels(infos: Sequence[Mapping[str, Any]]) -> list:
  """The different labels the rule derives from these run_info records' label_parts (ignoring their explicit
  labels): more than one means an explicit label pools runs that differ (the report warns)."""
  derived = {label_from_parts(str(info.get("agent", "")), info["label_parts"])
             for info in infos if isinstance(info.get("label_parts"), Mapping)}
  return sorted(derived)


def base_label(label: str) -> str:
  """The label without its settings in parentheses: 'CQL+DR3 (c0=0.03)' -> 'CQL+DR3' (to find the paper's
  entry for an algorithm)."""
  return label.split(" (", 1)[0]
