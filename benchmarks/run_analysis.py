"""What the scripts that analyse one run folder share: their command line and figure saving."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def run_parser(doc: str, results: Path) -> argparse.ArgumentParser:
    """A parser taking ``run_dir`` and ``--name`` (the results file under ``results``), with
    the first line of the script's ``doc`` as its description."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help=f"results file name under {results.name}/")
    return parser


def save_figure(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
