"""`ttrl compare RUN_DIR...`: several runs (rewards, seeds, settings) side by side, as a terminal table and
as compare.html with the curves of every run overlaid (matplotlib, embedded; no network)."""
from __future__ import annotations

import os
from pathlib import Path

from .report import CSS, RunFiles, _esc, _mean, _table, load_run

# accuracies are fractions, shown as percentages
COLUMNS = ["run", "status", "protocol", "reward", "seed", "steps", "items", "base", "maj@N", "adapted", "delta", "online",
           "seconds", "peak MB"]


def row(run: RunFiles) -> dict:
    s = run.summary or {}
    base, adapted = s.get("base_accuracy"), s.get("adapted_accuracy")
    if not run.finished:  # the rows so far: the accuracy of what was evaluated
        adapted = _mean([r.get("adapted_correct") for r in run.predictions])
    return {"run": run.name, "status": "finished" if run.finished else "unfinished", "protocol": run.protocol,
            "reward": s.get("reward") or run.setting("reward", "reward"), "seed": s.get("seed", run.setting("run", "seed")),
            "steps": run.steps, "items": s.get("n_eval", s.get("n_items")), "base": base, "maj@N": s.get("base_maj_accuracy"), "adapted": adapted,
            "delta": None if base is None or adapted is None else adapted - base,
            "online": s.get("online_accuracy") if run.finished else (
                _mean([r.get("correct") for r in run.predictions]) if run.online else None),
            "seconds": s.get("seconds"), "peak MB": s.get("peak_rss_mb")}


def _cell(col: str, v) -> str:
    if v is None:
        return "-"
    if col in ("base", "maj@N", "adapted", "online"):
        return f"{100 * v:.1f}%"
    if col == "delta":
        return f"{100 * v:+.1f}pp"
    if col in ("seconds", "peak MB"):
        return f"{v:.0f}"
    return str(v)


def table_text(rows: list[dict]) -> str:
    cells = [COLUMNS] + [[_cell(c, r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(runs: list[RunFiles]) -> str:
    from .plots import compare_curves, png_base64

    rows = [row(r) for r in runs]
    fig, titles = compare_curves([(r.name, r.metrics) for r in runs])
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ttrl compare</title>",
             f"<style>{CSS}</style></head><body><h1>ttrl run comparison</h1>",
             "<div class='sub'>" + "<br>".join(_esc(r.path.resolve()) for r in runs) + "</div>",
             "<h2>Runs</h2>",
             _table(COLUMNS, [[_esc(_cell(c, r[c])) for c in COLUMNS] for r in rows], ' id="runs"'),
             ("<p class='sub'>items: evaluated (transductive) or answered (online); base: greedy accuracy of the base model; maj@N: its majority vote of N samples; delta: "
              "adapted - base; online: accuracy of answers given as items arrived. Unfinished runs show the rows so "
              "far.</p>"), "<h2>Curves over update steps</h2>"]
    if fig is not None:
        parts.append(f"<img alt='{_esc(', '.join(titles))}' src='data:image/png;base64,{png_base64(fig)}'>")
    else:
        parts.append("<p>No update steps logged.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> tuple[str, Path]:
    """Returns the terminal table and the path of the HTML page written."""
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(runs), encoding="utf-8")
    os.replace(tmp, out)
    return table_text([row(r) for r in runs]), out
