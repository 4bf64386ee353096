"""The Meta-TTRL table of docs/meta_ttrl.md from finished runs (`runs/meta_ttrl/REWARD-sSEED/summary.json`): the
pixel checker's GenEval-style shares before and after, overall and per category, and on the prompts adapted on
vs the others. Every run is an ordinary `ttrl run` (command in the doc and in each run's config.yaml).

    python scripts/meta_ttrl_table.py runs/meta_ttrl --doc docs/meta_ttrl.md
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from op_ttrav_table import cell, rewrite_block

# summary key ({} = base or adapted) -> column name
COLUMNS = (("{}_accuracy", "full"), ("{}_colour", "colour"), ("{}_shape", "shape"), ("{}_binding", "binding"),
           ("{}_position", "position"), ("{}_blind_accuracy", "full, prompt-blind"),
           ("{}_blind_colour", "colour, prompt-blind"), ("adapted_items_{}_accuracy", "full, prompts adapted on"),
           ("other_items_{}_accuracy", "full, other prompts"))


def table(root: Path) -> str:
    runs: dict[str, list[dict]] = defaultdict(list)
    for p in sorted(root.glob("*/summary.json")):
        m = re.fullmatch(r"(.+)-s(\d+)", p.parent.name)
        if m:
            runs[m.group(1)].append({**json.loads(p.read_text()), "_seed": int(m.group(2))})
    head = ["reward", "seeds", "images per phase"] + [f"{n} % {side}" for _, n in COLUMNS for side in ("base", "adapted")]
    head += ["reward mean, first / last step", "s / step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for reward, rs in sorted(runs.items(), key=lambda kv: (kv[0] == "random", kv[0])):
        rs.sort(key=lambda r: r["_seed"])
        row = [reward, ",".join(str(r["_seed"]) for r in rs), str(rs[0].get("adapted_n_images", "-"))]
        for key, _ in COLUMNS:
            for side in ("base", "adapted"):
                row.append(cell([100 * v for r in rs if (v := r.get(key.format(side))) is not None], "{:.1f}"))
        curves = [[json.loads(x)["reward_mean"] for x in (root / f"{reward}-s{r['_seed']}" / "metrics.jsonl")
                   .read_text().splitlines() if x.strip()] for r in rs]
        row.append(" ; ".join(f"{c[0]:.2f} / {c[-1]:.2f}" for c in curves if c) or "-")
        row.append(cell([r["adapt_seconds"] / max(r["steps"], 1) for r in rs if r.get("adapt_seconds")], "{:.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="runs/meta_ttrl", help="folder of the run folders")
    ap.add_argument("--doc", help="rewrite the <!-- meta_ttrl --> ... <!-- /meta_ttrl --> block of this document")
    a = ap.parse_args()
    text = table(Path(a.root))
    print(text)
    if a.doc:
        rewrite_block(Path(a.doc), "meta_ttrl", text)
