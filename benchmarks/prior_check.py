"""Can the policy prior's start-state check see a prior get worse? Every snapshot's prior
scored under every snapshot's model (``dynaplan.analysis.prior_check``); JSON and a heatmap
under ``benchmarks/results/prior_check/``.

    .venv/bin/python benchmarks/prior_check.py runs/long/ant-g997-seed1 --name ant-g997-seed1 \\
        --steps 172000 177000 182000 187000 192000 197000 200000
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from run_analysis import run_parser, save_figure

from dynaplan.analysis.prior_check import CheckMatrix, check_returns

OUT = Path(__file__).parent / "results" / "prior_check"


def plot(matrix: CheckMatrix, path: Path, title: str) -> None:
    labels = [f"{s // 1000}k" for s in matrix.steps]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(matrix.returns, cmap="viridis")
    for i, row in enumerate(matrix.returns):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("prior from the snapshot at")
    ax.set_ylabel("model from the snapshot at")
    fig.colorbar(image, label=f"check return ({matrix.check_horizon} model steps, no value)")
    ax.set_title(title)
    save_figure(fig, path)


def main() -> None:
    parser = run_parser(__doc__, OUT)
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="snapshots to use")
    parser.add_argument("--note", default="", help="how the run was made")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    matrix = check_returns(args.run_dir, args.steps)
    for steps, row in zip(matrix.steps, matrix.returns, strict=True):
        print(f"model {steps:>8,}: " + "  ".join(f"{value:7.1f}" for value in row))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "run_dir": str(args.run_dir),
        **asdict(matrix),
        "machine": f"{platform.machine()} CPU, 1 torch thread",
        "note": args.note,
    }
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(matrix, path.with_suffix(".png"), f"start-state check: {args.name}")
    print(f"wrote {path} and .png")


if __name__ == "__main__":
    main()
