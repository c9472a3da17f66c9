"""Copy an experiment's results (not its run folders) into benchmarks/results/experiments/NAME.

    python benchmarks/collect_experiment.py runs/exp-pendulum pendulum --note "..."

Copies ``compare/`` (curves.png, summary.csv, summary.md), each run's ``config.json`` and
``metrics.csv`` (into ``runs/VARIANT/seed_S``, so ``dynaplan compare`` can redraw and extend
the comparison without the run folders), the clones' ``clone.json`` and the analysis folders
(``planners/``, ``model_error/``) when present, and writes ``about.json``: the machine, the
commit, the date and the note (what ran, what was reused).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "experiments"
COPIED = ("compare", "planners", "model_error")
RUN_FILES = ("config.json", "metrics.csv", "branch.json")
"""What compare reads from a run folder: kilobytes, unlike its checkpoints and journal."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the experiment's --out folder")
    parser.add_argument("name")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    target = RESULTS / args.name
    target.mkdir(parents=True, exist_ok=True)
    for folder in COPIED:
        if (args.out / folder).is_dir():
            for path in (args.out / folder).iterdir():
                if path.is_file():
                    shutil.copy2(path, target / path.name)
    for run in sorted(args.out.glob("runs/*/seed_*")):
        copy = target / run.relative_to(args.out)
        copy.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, copy / name)
    for report in sorted(args.out.glob("clones/*/clone.json")):
        shutil.copy2(report, target / f"clone_{report.parent.name}.json")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    about = {
        "experiment": args.name,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{'a CUDA GPU' if torch.cuda.is_available() else 'no GPU'}, 1 torch thread per run"
        ),
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "note": args.note,
    }
    (target / "about.json").write_text(json.dumps(about, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
