"""The OP-TTRAV reward table of docs/op_ttrav.md from finished runs (`runs/omni/KIND-REWARD-sSEED/summary.json`,
and `runs/results/sciq_open/...` for the text rows). Every run is an ordinary `ttrl run`; its command is in
the run folder's config.yaml and in the doc.

    python scripts/op_ttrav_table.py runs/omni                    # markdown table, mean ± sd over the seeds
    python scripts/op_ttrav_table.py runs/omni --doc docs/op_ttrav.md --marker omni   # rewrite a doc's block
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = (("accuracy", "accuracy %", 100, "{:.1f}"), ("rouge_l", "ROUGE-L", 1, "{:.3f}"), ("bleu", "BLEU", 1, "{:.1f}"),
           ("embedding_similarity", "embedding sim.", 1, "{:.3f}"))


def cell(xs: list[float], fmt: str) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format(statistics.stdev(xs))}"


def load(root: Path) -> dict[tuple[str, str], list[dict]]:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in sorted(root.glob("*/summary.json")):
        m = re.fullmatch(r"(.+?)-(.+)-s(\d+)", p.parent.name)
        if m:
            runs[m.group(1), m.group(2)].append({**json.loads(p.read_text()), "_seed": int(m.group(3))})
    return runs


def table(root: Path) -> str:
    runs = load(root)
    head = ["items", "reward", "seeds"]
    for _, name, _, _ in METRICS:
        head += [f"{name} base", f"{name} adapted"]
    head += ["adapted - base, accuracy (per seed)", "top-answer share %", "step s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (kind, reward), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] == "random", kv[0][1])):
        row = [kind, reward, ",".join(str(r["_seed"]) for r in sorted(rs, key=lambda r: r["_seed"]))]
        for key, _, scale, fmt in METRICS:
            for side in ("base", "adapted"):
                row.append(cell([scale * r[f"{side}_{key}"] for r in rs if r.get(f"{side}_{key}") is not None], fmt))
        gains = [100 * (r["adapted_accuracy"] - r["base_accuracy"]) for r in sorted(rs, key=lambda r: r["_seed"])]
        row.append(cell(gains, "{:+.1f}") + " (" + ", ".join(f"{g:+.0f}" for g in gains) + ")")
        row.append(cell([100 * r["adapted_top_answer_share"] for r in rs if r.get("adapted_top_answer_share")], "{:.0f}"))
        row.append(cell([r["adapt_seconds"] / max(r["steps"], 1) for r in rs if r.get("adapt_seconds")], "{:.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def rewrite_block(doc: Path, marker: str, text: str) -> None:
    """Replace the <!-- marker --> ... <!-- /marker --> block of `doc` with `text`."""
    open_, close = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    old = doc.read_text()
    if open_ not in old or close not in old:
        sys.exit(f"{doc}: no {open_} ... {close} block to rewrite")
    head, rest = old.split(open_, 1)
    doc.write_text(f"{head}{open_}\n{text}\n{close}{rest.split(close, 1)[1]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="runs/omni", help="folder of the run folders")
    ap.add_argument("--doc", help="rewrite the <!-- MARKER --> ... <!-- /MARKER --> block of this document")
    ap.add_argument("--marker", default="omni", help="name of the block in --doc")
    a = ap.parse_args()
    text = table(Path(a.root))
    print(text)
    if a.doc:
        rewrite_block(Path(a.doc), a.marker, text)
