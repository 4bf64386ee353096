"""`ttrl report RUN_DIR`: one self-contained report.html (plots embedded as PNGs, no network) from a run
folder: summary, curves with the events on the same step axis, the items whose answer changed, the config.

Reads only what the run wrote, so it works on a finished run, on a killed one (no summary.json, a torn last
line), on online/episodic runs and on runs without labels."""
from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError

log = logging.getLogger(__name__)

FILES = ("metrics.jsonl", "events.jsonl", "predictions.jsonl", "base.jsonl", "base_votes.jsonl", "resets.jsonl")
MAX_ITEMS = 40  # items listed per answer-change group; the counts cover all of them
OPEN_ITEMS = 2  # of which the first few show their responses unfolded


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Rows of a JSONL file and the number of unreadable lines (a killed run can leave a torn last line)."""
    if not path.exists():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


@dataclass
class RunFiles:
    """What a run folder holds, read leniently."""
    path: Path
    config: dict = field(default_factory=dict)
    config_text: str = ""
    summary: dict | None = None
    rows: dict[str, list[dict]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def _rows(self, name: str) -> list[dict]:
        return self.rows.get(name, [])

    metrics = property(lambda self: self._rows("metrics.jsonl"))
    events = property(lambda self: self._rows("events.jsonl"))
    predictions = property(lambda self: self._rows("predictions.jsonl"))
    base = property(lambda self: self._rows("base.jsonl"))
    base_votes = property(lambda self: self._rows("base_votes.jsonl"))
    resets = property(lambda self: self._rows("resets.jsonl"))

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        sec = self.config.get(section)
        return sec.get(key, default) if isinstance(sec, dict) else default

    @property
    def protocol(self) -> str:
        p = (self.summary or {}).get("protocol") or self.setting("protocol", "protocol")
        if p:
            return p
        return "online" if any("index" in r for r in self.predictions) else "transductive"

    @property
    def online(self) -> bool:
        return self.protocol in ("online", "episodic")

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def steps(self) -> int:
        if self.summary and isinstance(self.summary.get("steps"), int):
            return self.summary["steps"]
        return max((r["step"] for r in self.metrics if isinstance(r.get("step"), int)), default=0)


def load_run(path: str | Path) -> RunFiles:
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder")
    run = RunFiles(path)
    cfg_path = path / "config.yaml"
    if cfg_path.exists():
        run.config_text = cfg_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(run.config_text)
            run.config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            run.dropped["config.yaml"] = 1
    sp = path / "summary.json"
    if sp.exists():
        try:
            run.summary = json.loads(sp.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            run.dropped["summary.json"] = 1
    for name in FILES:
        run.rows[name], run.dropped[name] = read_jsonl(path / name)
    if not cfg_path.exists() and run.summary is None and not any(run.rows.values()):
        raise ConfigError(f"{path}: not a run folder (no config.yaml, summary.json or JSONL files)")
    return run


def _mean(xs: list) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


@dataclass
class Card:
    label: str
    value: Any
    kind: str = "pct"  # pct | num | pp (difference in percentage points)
    key: str | None = None  # the summary.json key it shows, when it shows one
    note: str = ""

    def text(self) -> str:
        if self.kind == "pct":
            return _pct(self.value)
        if self.kind == "pp":
            return "n/a" if self.value is None else f"{100 * self.value:+.1f} pp"
        return _num(self.value)


def headline(run: RunFiles) -> list[Card]:
    """The numbers a reader wants first: from summary.json, or for an unfinished run from the rows so far."""
    s, n_votes = run.summary, run.setting("protocol", "base_maj_votes", "N")
    if s is not None and run.online:
        cards = [Card(f"{run.protocol} accuracy", s.get("online_accuracy"), key="online_accuracy",
                      note="answers as given when each item arrived"),
                 Card("items answered", s.get("n_items"), "num", "n_items")]
        if s.get("n_resets") is not None:
            cards.append(Card("resets", s.get("n_resets"), "num", "n_resets"))
        return cards
    if s is not None:
        cards = [Card("base accuracy", s.get("base_accuracy"), key="base_accuracy", note="greedy"),
                 Card(f"base maj@{n_votes}", s.get("base_maj_accuracy"), key="base_maj_accuracy",
                      note="ceiling for sharpening"),
                 Card("adapted accuracy", s.get("adapted_accuracy"), key="adapted_accuracy",
                      note=f"after {s.get('steps')} steps on {s.get('n_adapt')} unlabeled items")]
        b, a = s.get("base_accuracy"), s.get("adapted_accuracy")
        cards.append(Card("adapted - base", None if a is None or b is None else a - b, "pp"))
        for key, label in (("base_sample_accuracy", "base sample accuracy"), ("base_pass_at_n", f"base pass@{n_votes}"),
                           ("base_bleu", "base BLEU"), ("adapted_bleu", "adapted BLEU"),
                           ("base_rouge_l", "base ROUGE-L"), ("adapted_rouge_l", "adapted ROUGE-L"),
                           ("base_embedding_similarity", "base embedding similarity"),
                           ("adapted_embedding_similarity", "adapted embedding similarity")):
            if s.get(key) is not None:
                cards.append(Card(label, s[key], "pct" if "accuracy" in key or "pass" in key else "num", key))
        return cards
    # unfinished: what the files hold so far
    preds = run.predictions
    if run.online:
        return [Card(f"{run.protocol} accuracy so far", _mean([r.get("correct") for r in preds]),
                     note=f"{len(preds)} items answered"),
                Card("steps done", run.steps, "num")]
    votes = [v["n_correct"] / len(v["votes"]) for v in run.base_votes
             if v.get("n_correct") is not None and v.get("votes")]
    return [Card("base answers written", len(run.base), "num"),
            Card("base sample accuracy so far", _mean(votes), note=f"{len(votes)} items with {n_votes} votes"),
            Card("steps done", run.steps, "num"),
            Card("adapted accuracy so far", _mean([r.get("adapted_correct") for r in preds]),
                 note=f"{len(preds)} items evaluated"),
            Card("base accuracy, same items", _mean([r.get("base_correct") for r in preds]))]


def _run_facts(run: RunFiles) -> list[tuple[str, str]]:
    s = run.summary or {}
    facts = [("status", "finished" if run.finished else "unfinished (no summary.json: killed, crashed or running)"),
             ("model", s.get("model") or run.setting("model", "model")),
             ("data", s.get("data") or run.setting("data", "data")),
             ("protocol", run.protocol),
             ("reward", s.get("reward") or run.setting("reward", "reward")),
             ("seed", s.get("seed", run.setting("run", "seed"))),
             ("update steps", run.steps)]
    if s:
        facts += [("time", f"{s['seconds']:.0f} s" if isinstance(s.get("seconds"), (int, float)) else "n/a"),
                  ("peak memory", f"{s['peak_rss_mb']:.0f} MB" if isinstance(s.get("peak_rss_mb"), (int, float)) else "n/a"),
                  ("stopped early", s.get("stopped") or "no")]
    return [(k, "n/a" if v is None else str(v)) for k, v in facts]


def _online_accuracy(run: RunFiles) -> tuple[list, list]:
    """Accuracy of the answers given so far, against the step at which each was given."""
    x, y, ok, n = [], [], 0, 0
    for r in run.predictions:
        if r.get("correct") is None or not isinstance(r.get("step"), (int, float)):
            continue
        ok, n = ok + bool(r["correct"]), n + 1
        x.append(r["step"])
        y.append(ok / n)
    return x, y


def curves_png(run: RunFiles) -> tuple[str | None, list[str]]:
    from .plots import png_base64, run_curves

    events = run.events + [{"step": r.get("step"), "event": "reset"} for r in run.resets]
    extra = [("accuracy of answers so far", *_online_accuracy(run))] if run.online else []
    fig, titles = run_curves(run.metrics, events, extra)
    return (png_base64(fig), titles) if fig is not None else (None, [])


def answer_changes(run: RunFiles) -> dict[str, list[dict]]:
    """Transductive runs: items fixed (base wrong, adapted right), broken (the reverse); without labels,
    items whose answer changed."""
    groups: dict[str, list[dict]] = {"fixed": [], "broken": [], "changed": [], "kept right": [], "kept wrong": []}
    for r in run.predictions:
        b, a = r.get("base_correct"), r.get("adapted_correct")
        if b is not None and a is not None:
            groups[{(False, True): "fixed", (True, False): "broken", (True, True): "kept right",
                    (False, False): "kept wrong"}[(bool(b), bool(a))]].append(r)
        elif "base_answer" in r and r.get("base_answer") != r.get("adapted_answer"):
            groups["changed"].append(r)
    return groups


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1150px;padding:18px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.sub{color:#666;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px;background:#fafafa}
.card .v{font-size:22px;font-weight:600}.card .l{font-size:12px;color:#555}.card .n{font-size:11px;color:#888}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px;border-radius:4px;font-size:13px}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap;max-height:520px}
img{max-width:100%}details{margin:3px 0}summary{cursor:pointer}.ok{color:#1a7f37}.bad{color:#c62828}
code{font-size:12px}table.resp{width:100%;table-layout:fixed}
"""


def _table(header: list[str] | None, rows: list[list[str]], attrs: str = "") -> str:
    """Cells are HTML already (escape them first); the header is plain text."""
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}>{head}{body}</table>"


def _cards_html(cards: list[Card]) -> str:
    out = []
    for c in cards:
        data = f' data-key="{_esc(c.key)}" data-value="{_esc(json.dumps(c.value))}"' if c.key else ""
        out.append(f'<div class="card"{data}><div class="l">{_esc(c.label)}</div><div class="v">{_esc(c.text())}</div>'
                   f'<div class="n">{_esc(c.note)}</div></div>')
    return '<div class="cards">' + "".join(out) + "</div>"


def _events_html(run: RunFiles) -> str:
    events = run.events
    if not events:
        return "<p>No events: no gate, collapse, rollback, early stop, budget or bad input.</p>"
    gates: dict[str, int] = {}
    rows = []
    for e in events:
        if e.get("event") == "gate":
            gates[str(e.get("reason"))] = gates.get(str(e.get("reason")), 0) + 1
        else:
            extra = {k: v for k, v in e.items() if k not in ("step", "event", "reason")}
            rows.append([_esc(e.get("step")), f"<b>{_esc(e.get('event'))}</b>", _esc(e.get("reason")),
                         _esc(json.dumps(extra)) if extra else ""])
    out = ""
    if rows:
        out += _table(["step", "event", "reason", "details"], rows[:200])
        if len(rows) > 200:
            out += f"<p class='sub'>... and {len(rows) - 200} more in events.jsonl</p>"
    if gates:
        out += "<p>Groups skipped by the gate (not updated on):</p>"
        out += _table(["reason", "groups"], [[_esc(k), str(v)] for k, v in sorted(gates.items(), key=lambda kv: -kv[1])])
    return out


def _item_html(r: dict, base_resp: str | None, open_: bool = False) -> str:
    label = "" if r.get("label") is None else f" &middot; label <code>{_esc(r['label'])}</code>"
    head = (f"<code>{_esc(r.get('id'))}</code>: <code>{_esc(r.get('base_answer'))}</code> &rarr; "
            f"<code>{_esc(r.get('adapted_answer'))}</code>{label}")
    return (f"<details{' open' if open_ else ''}><summary>{head}</summary><table class='resp'><tr><th>base response</th><th>adapted response</th></tr>"
            f"<tr><td><pre>{_esc(base_resp if base_resp is not None else '(not recorded)')}</pre></td>"
            f"<td><pre>{_esc(r.get('response', ''))}</pre></td></tr></table></details>")


def _changes_html(run: RunFiles) -> str:
    if run.online:
        wrong = [r for r in run.predictions if r.get("correct") is False]
        unscored = sum(r.get("correct") is None for r in run.predictions)
        out = (f"<p>Each item is answered once, with the weights of that moment: {len(run.predictions)} answered, "
               f"{len(wrong)} wrong, {unscored} without a label.</p>")
        for r in wrong[:MAX_ITEMS]:
            out += (f"<details><summary><code>{_esc(r.get('id'))}</code> (item {_esc(r.get('index'))}, step "
                    f"{_esc(r.get('step'))}): <code>{_esc(r.get('answer'))}</code> &middot; label "
                    f"<code>{_esc(r.get('label'))}</code></summary><pre>{_esc(r.get('response', ''))}</pre></details>")
        return out
    if not run.predictions:
        return "<p>No adapted predictions yet (the run stopped before the adapted evaluation).</p>"
    groups = answer_changes(run)
    base_resp = {b.get("id"): b.get("base_response") for b in run.base}
    counts = {k: len(v) for k, v in groups.items()}
    out = _table(["fixed (wrong → right)", "broken (right → wrong)", "kept right", "kept wrong",
                  "changed, no label"], [[str(counts["fixed"]), str(counts["broken"]), str(counts["kept right"]),
                                          str(counts["kept wrong"]), str(counts["changed"])]], ' id="transitions"')
    for key, title, cls in (("fixed", "Fixed by adaptation", "ok"), ("broken", "Broken by adaptation", "bad"),
                            ("changed", "Answer changed (no label to judge)", "")):
        rows = groups[key]
        if not rows:
            continue
        more = f" (first {MAX_ITEMS})" if len(rows) > MAX_ITEMS else ""
        out += f"<h3 class='{cls}'>{title}: {len(rows)}{more}</h3>"
        out += "".join(_item_html(r, base_resp.get(r.get("id")), open_=i < OPEN_ITEMS) for i, r in enumerate(rows[:MAX_ITEMS]))
    return out


def render(run: RunFiles) -> str:
    """The report as one HTML string."""
    png, titles = curves_png(run)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ttrl report: {_esc(run.name)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>ttrl run report: {_esc(run.name)}</h1>",
             f"<div class='sub'>{_esc(run.path.resolve())}</div>"]
    if not run.finished:
        parts.append("<p class='warn'>This run has no summary.json: it was killed, crashed or is still running. "
                     "The numbers below are what its files hold so far "
                     "(<code>ttrl run --resume DIR</code> continues it).</p>")
    torn = {k: v for k, v in run.dropped.items() if v}
    if torn:
        parts.append("<p class='warn'>Unreadable lines skipped (e.g. a line torn by a kill): "
                     + ", ".join(f"{_esc(k)}: {v}" for k, v in torn.items()) + "</p>")
    parts.append("<h2>Summary</h2>" + _cards_html(headline(run)))
    parts.append(_table(None, [[f"<b>{_esc(k)}</b>", _esc(v)] for k, v in _run_facts(run)], ' id="facts"'))
    if run.summary is not None:
        rows = [[_esc(k), _esc(json.dumps(v))] for k, v in run.summary.items()]
        parts.append("<details><summary>summary.json</summary>"
                     + _table(["key", "value"], rows, ' id="summary-json"') + "</details>")
    parts.append("<h2>Curves over update steps</h2>")
    if png:
        parts.append(f"<img alt='{_esc(', '.join(titles))}' src='data:image/png;base64,{png}'>")
        parts.append("<p class='sub'>Dashed lines: collapse (red), rollback (purple), early stop (orange), budget "
                     "(brown). Label and reward accuracy use the labels for logging only; no update sees them.</p>")
    else:
        parts.append("<p>No update steps logged yet.</p>")
    parts.append("<h2>Events</h2>" + _events_html(run))
    parts.append("<h2>Answers</h2>" + _changes_html(run))
    parts.append("<h2>Files</h2>" + _table(["file", "rows", "unreadable lines"],
                 [[_esc(n), str(len(run.rows[n])), str(run.dropped.get(n, 0))] for n in FILES if (run.path / n).exists()],
                 ' id="files"'))
    parts.append("<h2>Config</h2>" + (f"<pre>{_esc(run.config_text)}</pre>" if run.config_text else "<p>No config.yaml.</p>"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) atomically; returns its path."""
    run = load_run(run_dir)
    path = Path(out) if out else run.path / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(run), encoding="utf-8")
    os.replace(tmp, path)
    return path


def report_quietly(run_dir: str | Path) -> Path | None:
    """The end-of-run report: a failure here is logged, never raised (the run's results are already written)."""
    try:
        path = write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - a broken report must not fail a finished run
        log.warning("report.html not written: %s: %s", type(e).__name__, e)
        return None
    log.info("report: %s", path)
    return path
