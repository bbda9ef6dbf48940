r"""Benchmarks: every figure is a ratio against a baseline measured side by side in the same run.

  .venv/bin/python benchmarks/run.py [--quick] [--only data,agents,continuous]

Runs `benchmarks/bench_<area>.py::run(quick) -> list[dict]`, prints one table, and writes
`benchmarks/results.json`: a list of {"name", "value", "unit", "baseline", "ratio"} (plus "area", "goal" where
a module gives one, and "spread": min / median / max of the ratio over the rounds it was measured in, see
`spread.py`). The machine is shared and noisy: compare ratios, not absolute times.
"""
import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

AREAS = ("data", "agents", "eval", "run", "continuous", "multi_seed")
REQUIRED_KEYS = ("name", "value", "unit", "baseline", "ratio")


def _format(value):
  return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes in all")
  parser.add_argument("--only", default=",".join(AREAS), help="comma-separated areas to run")
  parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
  args = parser.parse_args()

  entries, failures = [], []
  for area in [a.strip() for a in args.only.split(",") if a.strip()]:
    print(f"== {area} ==", flush=True)
    started = time.time()
    try:
      module = importlib.import_module(f"bench_{area}")
      results = module.run(args.quick)
    except Exception:  # one area failing must not hide the others' figures
      traceback.print_exc()
      failures.append(area)
      continue
    for entry in results:
      missing = [k for k in REQUIRED_KEYS if k not in entry]
      if missing:
        raise ValueError(f"bench_{area}: entry {entry!r} lacks {missing}")
      entries.append(dict(entry, area=area))
    print(f"   ({time.time() - started:.0f} s)", flush=True)

  width = max([len(e["name"]) for e in entries] + [4])
  print(f"\n{'name':<{width}}  {'ratio':>8}  {'min..max over rounds':>20}  {'value':>10}  {'baseline':>10}  unit")
  for e in entries:
    spread = e.get("spread")
    shown = f"{_format(spread['min'])}..{_format(spread['max'])} ({spread['rounds']})" if spread else ""
    print(f"{e['name']:<{width}}  {_format(e['ratio']):>8}  {shown:>20}  {_format(e['value']):>10}  "
          f"{_format(e['baseline']):>10}  {e['unit']}" + (f"   goal {e['goal']}" if e.get("goal") else ""))
  report = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
            "quick": args.quick, "entries": entries}
  if not failures:
    with open(args.out, "w") as f:
      json.dump(entries, f, indent=2)
      f.write("\n")
    with open(os.path.splitext(args.out)[0] + "_meta.json", "w") as f:
      json.dump({k: v for k, v in report.items() if k != "entries"}, f, indent=2)
      f.write("\n")
    print(f"\nwrote {args.out}")
  else:
    print(f"\nnot writing {args.out}: failed areas {failures}")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
