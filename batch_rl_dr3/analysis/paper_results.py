"""The DR3 paper's published aggregates (Kumar et al., ICLR 2022), to print beside our own numbers.

Table 1: IQM of the human-normalized score (percent) over the 17 Atari games, with 95 % stratified-bootstrap CIs,
of the *average performance over the course of training* (the paper's stability measure), after 6.5M gradient
steps at 1 % and 12.5M at 5 % and 10 % ("10 %" = the first/initial 10 % of the data, our setting 'first10pct').
So these values are comparable with our "average" column, not with "final".

Table 2: D4RL -v0 tasks, CQL vs CQL + DR3, "after 2M gradient steps with a learning rate of 3e-4 for the
Q-function averaged over 4 seeds" (its caption), i.e. the FINAL score, printed as `mean ± spread`. The paper
prints two scales in one table: kitchen as D4RL-normalized percent (0-100, e.g. "kitchen-mixed 14.6 ± 20.5")
and antmaze as a success fraction (0-1, e.g. "antmaze-med-diverse 0.7 ± 0.1"; D4RL's antmaze reference scores
are 0 and 1, so the fraction is the normalized score / 100). We store both numbers exactly as printed with
their scale, and `table2_value` returns them on our scale (D4RL-normalized percent: the fraction x 100). The
caption does not say what the ± is; we read it as the spread over the 4 seeds and call our mean "within the
paper's spread" when |ours - paper mean| <= paper spread.

BRAC (Sec. 6, main text): "DR3 applied on BRAC improves final median normalized score performance by 13.8 and
stability by 8.1 across 15 MuJoCo tasks. Numbers for BRAC can be found in Table F.2." Table F.2 (the tasks) is
in the appendix we do not have; "15 MuJoCo tasks" is read as halfcheetah / hopper / walker2d x random / medium /
medium-replay / medium-expert / expert (-v0), the D4RL MuJoCo grid of that time (3 x 5 = 15), as
`launch/sweeps/brac_mujoco.toml` runs it.
"""
import dataclasses
from typing import Dict, Optional, Tuple

from batch_rl_dr3 import labels
from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.analysis.aggregate import IntervalEstimate

# (setting, label) -> IQM (lower, upper) of the average-over-training human-normalized score, percent.
DR3_TABLE1_IQM_AVERAGE: Dict[Tuple[str, str], IntervalEstimate] = {
    ("1pct", "CQL"): IntervalEstimate(43.7, 39.6, 48.6),
    ("1pct", "CQL+DR3"): IntervalEstimate(56.9, 52.5, 61.2),
    ("1pct", "REM"): IntervalEstimate(4.0, 3.3, 4.8),
    ("1pct", "REM+DR3"): IntervalEstimate(16.5, 14.5, 18.6),
    ("5pct", "CQL"): IntervalEstimate(78.1, 74.5, 82.4),
    ("5pct", "CQL+DR3"): IntervalEstimate(105.7, 101.9, 110.9),
    ("5pct", "REM"): IntervalEstimate(25.9, 23.4, 28.8),
    ("5pct", "REM+DR3"): IntervalEstimate(60.2, 55.8, 65.1),
    ("first10pct", "CQL"): IntervalEstimate(59.3, 56.4, 61.9),
    ("first10pct", "CQL+DR3"): IntervalEstimate(65.8, 63.3, 68.3),
    ("first10pct", "REM"): IntervalEstimate(53.3, 51.4, 55.3),
    ("first10pct", "REM+DR3"): IntervalEstimate(73.8, 69.3, 78.0),
}

# Gradient steps behind each Table 1 setting.
DR3_TABLE1_GRADIENT_STEPS = {"1pct": 6_500_000, "5pct": 12_500_000, "first10pct": 12_500_000}

# (task, label) -> (mean, spread) exactly as printed in Table 2 (on the task's printed scale, TABLE2_PRINTED_SCALE).
DR3_TABLE2_PRINTED: Dict[Tuple[str, str], Tuple[float, float]] = {
    ("kitchen-mixed-v0", "CQL"): (14.6, 20.5), ("kitchen-mixed-v0", "CQL+DR3"): (37.0, 8.0),
    ("kitchen-partial-v0", "CQL"): (29.6, 19.6), ("kitchen-partial-v0", "CQL+DR3"): (43.5, 1.9),
    ("kitchen-complete-v0", "CQL"): (22.3, 17.5), ("kitchen-complete-v0", "CQL+DR3"): (24.8, 15.3),
    ("antmaze-medium-diverse-v0", "CQL"): (0.7, 0.1), ("antmaze-medium-diverse-v0", "CQL+DR3"): (0.9, 0.1),
    ("antmaze-medium-play-v0", "CQL"): (0.5, 0.4), ("antmaze-medium-play-v0", "CQL+DR3"): (0.4, 0.3),
    ("antmaze-large-diverse-v0", "CQL"): (0.1, 0.0), ("antmaze-large-diverse-v0", "CQL+DR3"): (0.3, 0.16),
    ("antmaze-large-play-v0", "CQL"): (0.06, 0.09), ("antmaze-large-play-v0", "CQL+DR3"): (0.1, 0.01),
}

# Task family -> factor from the printed value to D4RL-normalized percent (see the module docstring).
TABLE2_PRINTED_SCALE = {"kitchen": 1.0, "antmaze": 100.0}

# The BRAC claim of Sec. 6: BRAC+DR3 minus BRAC, median D4RL-normalized score over the 15 MuJoCo tasks.
DR3_BRAC_MEDIAN_IMPROVEMENT = {"final": 13.8, "average": 8.1}
BRAC_MUJOCO_TASKS = tuple(f"{env}-{kind}-v0" for env in ("halfcheetah", "hopper", "walker2d")
                          for kind in ("random", "medium", "medium-replay", "medium-expert", "expert"))


@dataclasses.dataclass(frozen=True)
class PaperScore:
  """A published `mean ± spread` on our scale (D4RL-normalized percent), and the printed text it came from."""
  mean: float
  spread: float
  printed: str

  def contains(self, value: float) -> bool:
    """Whether `value` lies within mean ± spread (the printed rounding allowed for)."""
    return abs(value - self.mean) <= self.spread + 1e-9 * max(1.0, abs(self.mean))

  def format(self) -> str:
    return f"{self.mean:.1f} ± {self.spread:.1f}"


# Agent labels our runs may carry for the paper's CQL on continuous tasks.
_TABLE2_LABEL_ALIASES = {"CQL-SAC": "CQL", "CQL_SAC": "CQL", "cql_sac": "CQL",
                         "CQL-SAC+DR3": "CQL+DR3", "CQL_SAC+DR3": "CQL+DR3", "cql_sac+DR3": "CQL+DR3"}

# Setting names users may write for the paper's "10 %" column.
_SETTING_ALIASES = {"10pct": "first10pct", "initial10pct": "first10pct"}


def table1_value(setting: str, label: str) -> Optional[IntervalEstimate]:
  """The paper's Table 1 entry for our (setting, label), or None when the paper has none. The label's settings
  in parentheses (e.g. 'CQL+DR3 (c0=0.03)') are dropped: the paper's entry is per algorithm."""
  return DR3_TABLE1_IQM_AVERAGE.get((_SETTING_ALIASES.get(setting, setting), labels.base_label(label)))


def table2_value(task: str, label: str) -> Optional[PaperScore]:
  """The paper's Table 2 entry for our (task, label) on the D4RL-normalized percent scale, or None."""
  label = labels.base_label(label)
  key = (scores.d4rl_env_name(task), _TABLE2_LABEL_ALIASES.get(label, label))
  if key not in DR3_TABLE2_PRINTED:
    return None
  mean, spread = DR3_TABLE2_PRINTED[key]
  scale = TABLE2_PRINTED_SCALE[key[0].split("-", 1)[0]]
  return PaperScore(mean * scale, spread * scale, f"{mean:g} ± {spread:g}")
