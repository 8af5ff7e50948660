"""Peak memory of the self-consistency loss against batch size and K (``python -m benchmarks.bench_memory``).

5. Each case runs in a fresh process that allocates the predictions, then runs the loss forward and
   backward; the peak resident memory (Linux's VmHWM, reset to the current size through
   ``/proc/self/clear_refs`` just before the loss) above the baseline, divided by the size of the predictions
   (B x K x N x P floats), should stay flat as K grows (linear in K). The same is shown for the loss
   written with all K x K pairs broadcast at once, which grows with K (quadratic).
"""
from __future__ import annotations

import json
import subprocess
import sys

N, P = 196, 768  # ViT-B/16 at 224 px: patches, values per patch


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

    pred = torch.randn(batch, parts, N, P, requires_grad=True)
    mask = parallel_mask(torch.rand(batch, N), parts).mask
    base = _reset_peak()
    if method == "ours":
        loss = self_consistency_loss(pred, mask)
    else:  # every pair at once: a (B, K, K, N, P) difference tensor
        both = mask[:, :, None] * mask[:, None, :]
        diff = (pred[:, :, None] - pred.detach()[:, None, :]).abs().mean(-1)
        loss = (diff * both).sum() / both.sum()
    loss.backward()
    peak = _status_kb("VmHWM")
    return {"extra_mb": (peak - base) / 1024, "pred_mb": pred.numel() * 4 / 2**20}


def main() -> None:
    print("\n== self-consistency loss memory (peak RSS above baseline / size of the predictions)")
    for batch in (8, 16):
        for parts in (2, 4, 7, 14):
            row = [f"[5] B={batch:2d} K={parts:2d}"]
            for method in ("ours", "all-pairs"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", method, str(batch),
                                      str(parts)], capture_output=True, text=True, check=True).stdout
                m = json.loads(out)
                row.append(f"{method}: {m['extra_mb']:7.1f} MB = {m['extra_mb'] / m['pred_mb']:4.1f}x preds")
            print("  ".join(row))


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
