"""Per-round figures of a side-by-side benchmark: the median and its spread, as results.json stores them.

Every ratio is measured in rounds (the contenders alternate within each round, so load from other processes on
this shared machine hits them alike); the entry's value / baseline / ratio are medians over rounds and
`spread` gives min / median / max of the per-round ratio.
"""
from typing import Dict, Sequence

import numpy as np


def spread(values: Sequence[float]) -> Dict[str, float]:
  """min / median / max of per-round figures (and how many rounds)."""
  values = np.asarray(list(values), np.float64)
  return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
          "rounds": int(values.size)}


def entry(name: str, values: Sequence[float], baselines: Sequence[float], unit: str, goal: str = "",
          higher_is_better: bool = True, **extra) -> dict:
  """A results.json entry from per-round values and baselines measured side by side (round r with round r).

  ratio = value / baseline when higher is better (rates), else value / baseline as well (times: lower is
  better); the per-round ratios give the spread.
  """
  values, baselines = np.asarray(values, np.float64), np.asarray(baselines, np.float64)
  ratios = values / baselines
  out = {"name": name, "value": float(np.median(values)), "unit": unit, "baseline": float(np.median(baselines)),
         "ratio": float(np.median(ratios)), "goal": goal, "spread": spread(ratios),
         "higher_is_better": bool(higher_is_better)}
  out.update(extra)
  return out


def describe(e: dict) -> str:
  s = e["spread"]
  return f"{e['name']}: ratio {e['ratio']:.3g} (min {s['min']:.3g}, max {s['max']:.3g}, {s['rounds']} rounds)"
