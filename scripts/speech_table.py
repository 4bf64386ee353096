"""docs/speech.md's per-seed rows from finished speech runs (`ROOT/SHIFT-REWARD-sSEED/summary.json`), plus a
mean ± sd row per shift and reward. Every run is the ordinary `ttrl run` printed in docs/speech.md.

    python scripts/speech_table.py runs/speech
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from op_ttrav_table import cell, load


def table(root: Path) -> str:
    lines = ["| shift | reward | seed | base WER | adapted WER | relative | base CER | adapted CER | steps | run time | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = sorted(load(root).items())
    for (shift, reward), rs in runs:
        for r in rs:
            rel = r["adapted_wer"] / r["base_wer"] - 1
            lines.append(f"| {shift} | {reward} | {r['_seed']} | {100 * r['base_wer']:.1f} | "
                         f"{100 * r['adapted_wer']:.1f} | {100 * rel:+.0f}% | {100 * r['base_cer']:.1f} | "
                         f"{100 * r['adapted_cer']:.1f} | {r['steps']} | {r['seconds']:.0f} s | {r['peak_rss_mb'] / 1024:.2f} GB |")
    for (shift, reward), rs in runs:
        if len(rs) > 1:
            w = [100 * r["adapted_wer"] for r in rs]
            lines.append(f"| {shift} | **{reward}, mean of {len(rs)}** | {','.join(str(r['_seed']) for r in rs)} | "
                         f"{100 * rs[0]['base_wer']:.1f} | {cell(w, '{:.1f}')} | "
                         f"{100 * (statistics.mean(w) / (100 * rs[0]['base_wer']) - 1):+.0f}% | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    print(table(ap.parse_args().root))
