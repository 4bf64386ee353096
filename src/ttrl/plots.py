"""matplotlib figures for run reports, returned as base64 PNGs to embed in self-contained HTML.

Uses matplotlib's object API (Figure + Agg canvas), never pyplot: no global backend switch, no GUI,
no figures kept alive between calls."""
from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# (panel title, metrics.jsonl keys drawn in it); panels without data are left out
PANELS: list[tuple[str, list[str]]] = [
    ("mean reward", ["reward_mean"]),
    ("KL to the reference", ["kl"]),
    ("answer entropy (nats)", ["answer_entropy"]),
    ("majority ratio", ["majority_ratio"]),
    ("response length (tokens)", ["response_length"]),
    ("label / reward accuracy", ["label_accuracy", "reward_accuracy"]),
    ("loss", ["loss"]),
    ("answers parsed", ["parsed"]),
    ("token entropy", ["token_entropy"]),
    ("seconds per step", ["seconds_sample", "seconds_reward", "seconds_update"]),
]
# events drawn as vertical lines on every panel (gates and bad inputs are frequent: the strip only)
LINE_EVENTS = {"collapse": "#d62728", "rollback": "#9467bd", "early_stop": "#ff7f0e", "budget": "#8c564b"}
EVENT_COLORS = {**LINE_EVENTS, "gate": "#7f7f7f", "bad_input": "#e377c2", "reset": "#17becf"}


def png_base64(fig) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _style(ax, title: str) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def run_curves(metrics: Sequence[dict], events: Sequence[dict], extra: Iterable[tuple[str, list, list]] = ()):
    """One run: a grid of metric panels over steps and, under each column, an event strip on the same step
    axis. `extra`: (title, steps, values) panels computed elsewhere (e.g. online accuracy so far).
    Returns (figure, panel titles drawn) or (None, []) when there is nothing to draw."""
    panels = [(t, [(k, *_series(metrics, k)) for k in keys]) for t, keys in PANELS]
    panels = [(t, [s for s in ss if s[1]]) for t, ss in panels]
    panels = [(t, ss) for t, ss in panels if ss] + [(t, [(t, x, y)]) for t, x, y in extra if x]
    if not panels and not events:
        return None, []
    ncol = 2 if len(panels) > 1 else 1
    nrow = -(-len(panels) // ncol)
    kinds = sorted({e.get("event", "?") for e in events}, key=lambda k: (k not in LINE_EVENTS, k))
    strip_h = 0.25 + 0.12 * len(kinds) if kinds else 0
    fig = Figure(figsize=(11, 2.2 * nrow + 2.2 * strip_h + 0.3), layout="constrained")
    grid = fig.add_gridspec(nrow + bool(kinds), ncol, height_ratios=[1] * nrow + ([strip_h] if kinds else []))
    strips = [fig.add_subplot(grid[nrow, c]) for c in range(ncol)] if kinds else []
    for c, strip in enumerate(strips):
        _event_strip(strip, events, kinds, labels=c == 0)
        if c:
            strip.sharex(strips[0])
    axes = []
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(grid[i // ncol, i % ncol], sharex=strips[0] if strips else (axes[0] if axes else None))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not strips and i >= len(panels) - ncol:
            ax.set_xlabel("update step", fontsize=9)
        for key, x, y in series:
            ax.plot(x, y, marker="o" if len(x) <= 60 else None, markersize=3, linewidth=1.2,
                    label=key if len(series) > 1 else None)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="best")
        _style(ax, title)
        ax.tick_params(labelbottom=True)
        axes.append(ax)
    for ev in events:
        if ev.get("event") in LINE_EVENTS and isinstance(ev.get("step"), (int, float)):
            for ax in axes:
                ax.axvline(ev["step"], color=LINE_EVENTS[ev["event"]], linestyle="--", linewidth=1)
    return fig, [t for t, _ in panels]


def _event_strip(ax, events: Sequence[dict], kinds: list[str], labels: bool) -> None:
    for row, kind in enumerate(kinds):
        steps = [e["step"] for e in events if e.get("event") == kind and isinstance(e.get("step"), (int, float))]
        ax.scatter(steps, [row] * len(steps), marker="|", s=150, color=EVENT_COLORS.get(kind, "#333333"))
    names = [f"{k} ({sum(e.get('event') == k for e in events)})" for k in kinds]
    ax.set_yticks(range(len(kinds)), names if labels else [""] * len(kinds))
    ax.set_ylim(-0.7, max(len(kinds), 1) - 0.3)
    ax.set_xlabel("update step", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, "events" if labels else "")


def compare_curves(runs: Sequence[tuple[str, Sequence[dict]]]):
    """Several runs: one panel per metric, one line per run. Returns (figure, titles) or (None, [])."""
    panels = []
    for title, keys in PANELS:
        for key in keys:
            lines = [(name, *_series(rows, key)) for name, rows in runs]
            if any(x for _, x, _ in lines):
                panels.append((title if len(keys) == 1 else key, lines))
    if not panels:
        return None, []
    ncol = 2
    nrow = -(-len(panels) // ncol)
    fig = Figure(figsize=(11, 2.5 * nrow + 0.5), layout="constrained")
    for i, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for name, x, y in lines:
            ax.plot(x, y, marker="o" if len(x) <= 40 else None, markersize=3, linewidth=1.2, label=name)
        _style(ax, title)
        ax.set_xlabel("update step", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    return fig, [t for t, _ in panels]
