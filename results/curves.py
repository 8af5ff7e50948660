"""Training curves of pre-training runs, from their ``log.txt``: per-epoch means and a plot.

    python -m results.curves RUN_DIR [RUN_DIR ...] --names MAE EMAE --out docs/curves

writes ``curves.csv`` (per run and epoch: the means of the pixel loss, the self-consistency loss and the
prediction spread over the epoch's logged steps) and ``curves.png`` (pixel loss and prediction spread against
images seen, in bins of ``--bin`` steps).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

from emae.errors import EmaeError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TERMS = ("pixel_loss", "consistency_loss", "prediction_spread")


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """One row per logged step of ``RUN_DIR/log.txt`` (``emae pretrain``'s), with the batch size from its config."""
    run_dir = Path(run_dir)
    log, config = run_dir / "log.txt", run_dir / "config.json"
    for path in (log, config):
        if not path.is_file():
            raise EmaeError(f"{path}: not found; expected the output folder of emae pretrain")
    rows = []
    for lineno, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmaeError(f"{log}:{lineno}: not valid JSON ({e.msg})") from None
        if "monitor" not in entry:  # the online monitor's points (emae.monitor) are not training steps
            rows.append(entry)
    frame = pd.DataFrame(rows)
    missing = [c for c in ("step", "epoch", *TERMS) if c not in frame.columns]
    if missing:
        raise EmaeError(f"{log}: no {missing} in its lines (a log of an older emae pretrain?)")
    batch = json.loads(config.read_text(encoding="utf-8"))["batch_size"]
    frame = frame.drop_duplicates("step", keep="last")  # a step logged again by a run started over: its last
    return frame.assign(images_seen=frame["step"] * batch)


def epoch_means(logs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per run (by name) and epoch: the mean of each term over the epoch's logged steps."""
    frames = [log.groupby("epoch")[list(TERMS)].mean().reset_index().assign(run=name) for name, log in logs.items()]
    return pd.concat(frames, ignore_index=True)[["run", "epoch", *TERMS]]


def plot_curves(logs: dict[str, pd.DataFrame], path: Path, bin_steps: int) -> Path:
    """Pixel loss and prediction spread against images seen, each point the mean of ``bin_steps`` steps."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, log in logs.items():
        binned = log.groupby((log["step"] - 1) // bin_steps).mean(numeric_only=True)
        for ax, term in zip(axes, ("pixel_loss", "prediction_spread")):
            ax.plot(binned["images_seen"] / 1000, binned[term], label=name)
    for ax, title in zip(axes, ("pixel loss (masked patches)", "prediction spread across images")):
        ax.set_title(title)
        ax.set_xlabel("images seen (thousands)")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m results.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders of emae pretrain")
    parser.add_argument("--names", nargs="+", help="one name per run (default: the folders' names)")
    parser.add_argument("--out", type=Path, required=True, help="folder for curves.csv and curves.png")
    parser.add_argument("--bin", type=int, default=20, help="steps per plotted point (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise EmaeError(f"--names gives {len(names)} names for {len(args.runs)} runs")
    logs = {name: read_log(run) for name, run in zip(names, args.runs)}
    args.out.mkdir(parents=True, exist_ok=True)
    epoch_means(logs).to_csv(args.out / "curves.csv", index=False, float_format="%.5g")
    print(args.out / "curves.csv")
    print(plot_curves(logs, args.out / "curves.png", args.bin))
    return 0


if __name__ == "__main__":
    import sys

    try:
        sys.exit(main())
    except EmaeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
