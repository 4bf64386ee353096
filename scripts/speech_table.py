"""docs/speech.md's per-seed rows from finished speech runs (`ROOT/SHIFT-REWARD-sSEED/summary.json`), plus a
mean ± sd row per shift and reward. Every run is the ordinary `ttrl run` printed in docs/speech.md.

    python scripts/speech_table.py runs/speech
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def rows(root: Path) -> list[dict]:
    out = []
    for p in sorted(root.glob("*/summary.json")):
        m = re.fullmatch(r"(.+)-(.+)-s(\d+)", p.parent.name)
        if m:
            s = json.loads(p.read_text())
            out.append({"shift": m.group(1), "reward": m.group(2), "seed": int(m.group(3)), **s})
    return out


def table(runs: list[dict]) -> str:
    lines = ["| shift | reward | seed | base WER | adapted WER | relative | base CER | adapted CER | steps | run time | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in runs:
        groups[r["shift"], r["reward"]].append(r)
        rel = r["adapted_wer"] / r["base_wer"] - 1
        lines.append(f"| {r['shift']} | {r['reward']} | {r['seed']} | {100 * r['base_wer']:.1f} | "
                     f"{100 * r['adapted_wer']:.1f} | {100 * rel:+.0f}% | {100 * r['base_cer']:.1f} | "
                     f"{100 * r['adapted_cer']:.1f} | {r['steps']} | {r['seconds']:.0f} s | {r['peak_rss_mb'] / 1024:.2f} GB |")
    for (shift, reward), rs in sorted(groups.items()):
        if len(rs) > 1:
            w = [100 * r["adapted_wer"] for r in rs]
            lines.append(f"| {shift} | **{reward}, mean of {len(rs)}** | {','.join(str(r['seed']) for r in rs)} | "
                         f"{100 * rs[0]['base_wer']:.1f} | {statistics.mean(w):.1f} ± {statistics.stdev(w):.1f} | "
                         f"{100 * (statistics.mean(w) / (100 * rs[0]['base_wer']) - 1):+.0f}% | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    print(table(rows(ap.parse_args().root)))
