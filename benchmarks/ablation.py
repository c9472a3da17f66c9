"""What limits a trained run's MPC: its checkpoint under changed planning settings.

    python benchmarks/ablation.py runs/long/ant-vp-seed0 --name ant --episodes 3
    python benchmarks/ablation.py RUN --name hopper --settings "as trained" "safety margin 0.03"
    python benchmarks/ablation.py RUN --name ant-margin --settings "search.safety_margin=0.1"
    python benchmarks/ablation.py RUN --name ant-190k --at-steps 192000   # a --snapshots run
    python benchmarks/ablation.py RUN --name ant-collapse --swap-from 192000  # what broke since

Writes ``benchmarks/results/ablation_NAME.json`` and ``.png``: the return of the same
evaluation episodes as trained, with the prior alone, without the terminal value or the
prior, planning only around the prior, with 1 Adam step, over H = 5, with pessimistic
critics and with a safety margin (those the run has parts for, or those ``--settings`` names;
see ``dynaplan.analysis.ablation``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dynaplan.analysis.ablation import (
    DEFAULT_SETTINGS,
    ablate,
    select_settings,
    swap_parts,
    write_ablation,
)

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="ablation_NAME.json in the results")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--note", default="", help="how the run was made, for the README row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--at-steps", type=int, help="ablate the snapshot at this many env steps (--snapshots runs)"
    )
    parser.add_argument(
        "--swap-from",
        type=int,
        metavar="STEPS",
        help="instead of --settings: plan with every subset of model, value and prior taken "
        "from the snapshot at STEPS (what broke between the two points)",
    )
    parser.add_argument(
        "--settings", nargs="*", default=[], metavar="LABEL", help=f"of {list(DEFAULT_SETTINGS)}"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.swap_from is not None and args.settings:
        parser.error("--swap-from chooses its own settings; leave out --settings")
    if args.swap_from is not None:
        scores = swap_parts(args.run_dir, args.episodes, args.seed, args.swap_from, args.at_steps)
    else:
        settings = select_settings(args.settings)
        scores = ablate(args.run_dir, args.episodes, args.seed, settings, args.at_steps)
    for s in scores:
        print(
            f"{s.setting:<36} return {s.return_mean:8.1f} ± {s.return_std:6.1f}   "
            f"{s.ms_per_step:6.1f} ms/step"
        )
    write_ablation(
        scores,
        args.run_dir,
        args.episodes,
        args.out,
        args.name,
        args.note,
        args.at_steps,
        args.swap_from,
    )


if __name__ == "__main__":
    main()
