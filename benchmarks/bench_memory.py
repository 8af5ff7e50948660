"""Peak memory of the self-consistency loss against K (run by ``python -m benchmarks.run_all``).

5. Each case runs in a fresh process that runs the loss once on one image (what the first backward sets up
   once is not counted), allocates the predictions, then runs the loss forward and backward; the peak
   resident memory (Linux's VmHWM, reset to the current size through
   ``/proc/self/clear_refs`` just before the loss) above the baseline, divided by the size of the predictions
   (B x K x N x P floats), should stay flat as K grows (linear in K). The same is shown for the loss
   written with all K x K pairs broadcast at once, which grows with K (quadratic).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.figures import Figure, Target
from benchmarks.timing import Spread

N, P = 196, 768  # ViT-B/16 at 224 px: patches, values per patch
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m benchmarks.bench_memory`` runs


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Reset the peak resident size to the current one, which it returns (kB)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    return _status_kb("VmRSS")


def measure(method: str, batch: int, parts: int) -> dict:
    import torch

    from emae.losses import self_consistency_loss
    from emae.masking import parallel_mask

    def loss_of(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if method == "ours":
            return self_consistency_loss(pred, mask)
        both = mask[:, :, None] * mask[:, None, :]  # every pair at once: a (B, K, K, N, P) difference tensor
        diff = (pred[:, :, None] - pred.detach()[:, None, :]).abs().mean(-1)
        return (diff * both).sum() / both.sum()

    def inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(b, parts, N, P, requires_grad=True), parallel_mask(torch.rand(b, N), parts).mask

    loss_of(*inputs(1)).backward()  # one image first: what the first backward sets up once is not the loss's
    pred, mask = inputs(batch)
    base = _reset_peak()
    loss_of(pred, mask).backward()
    peak = _status_kb("VmHWM")
    return {"extra_mb": (peak - base) / 1024, "pred_mb": pred.numel() * 4 / 2**20}


def growth(ratios: dict[int, float]) -> Spread:
    """How the peak per byte of predictions grows from the smallest K to the largest (1: linear in K, K_max /
    K_min: quadratic), with the range of the per-K ratios relative to the smallest K's."""
    first = ratios[min(ratios)]
    rel = [r / first for r in ratios.values()]
    return Spread(ratios[max(ratios)] / first, min(rel), max(rel))


def memory_figures(batch: int = 16, parts: tuple[int, ...] = (4, 7, 14)) -> list[Figure]:
    """[5]: each case in a fresh process; ours should stay flat per byte of predictions (target: grows at most
    1.25x from the smallest K to the largest), the all-pairs loss is shown for contrast. The smallest K is 4
    (EMAE's): at K = 2 and B = 16 the predictions (18 MB) are smaller than the amount by which the allocator's
    own overhead varies between fresh processes (the extra peak at K = 2 measured 110 to 165 MB), so a growth
    taken from K = 2 moved by a third between runs."""
    print(f"[5] self-consistency loss, B={batch}: peak RSS above baseline / size of the predictions", flush=True)
    figures = []
    for method in ("ours", "all-pairs"):
        ratios = {}
        for k in parts:
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", method, str(batch), str(k)],
                                 capture_output=True, text=True, check=True, cwd=ROOT).stdout
            m = json.loads(out)
            ratios[k] = m["extra_mb"] / m["pred_mb"]
            print(f"[5] {method:9s} B={batch:2d} K={k:2d}: {m['extra_mb']:7.1f} MB = {ratios[k]:4.1f}x the predictions",
                  flush=True)
        config = dict(batch=batch, parts_compared=list(parts), patches=N, values_per_patch=P)
        figures.append(Figure("[5]", f"loss memory / predictions, {method}, B={batch}: growth K={parts[0]} to "
                              f"K={parts[-1]}", "memory_growth", growth(ratios),
                              "the per-K ratios, one fresh process each (a count, not a timing)", "emae",
                              "none", "random predictions", config,
                              Target("<=", 1.25) if method == "ours" else None, "x",
                              details=dict(loss=method, ratio_per_k={str(k): r for k, r in ratios.items()})))
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
    else:
        memory_figures()
