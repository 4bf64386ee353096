"""Safeguards firing and not firing, on hand-made statistics."""
import dataclasses
from types import SimpleNamespace

from ttrl.config import SafeguardConfig
from ttrl.group import VoteStats
from ttrl.safeguards import CollapseMonitor, EarlyStopper, budget_reason, gate_reason

VOTE_OK = VoteStats(majority_ratio=0.75, answer_entropy=0.56, unique_answers=2, parsed=1.0)


def test_gate():
    assert gate_reason(VOTE_OK, SafeguardConfig()) is None
    assert gate_reason(dataclasses.replace(VOTE_OK, parsed=0.0), SafeguardConfig()) == "no answer parsed"
    assert gate_reason(dataclasses.replace(VOTE_OK, parsed=0.0), SafeguardConfig(gate_require_parsed=False)) is None
    assert "majority ratio 0.75 < 0.8" in gate_reason(VOTE_OK, SafeguardConfig(gate_min_majority=0.8))
    assert gate_reason(VOTE_OK, SafeguardConfig(gate_min_majority=0.7)) is None
    assert "answer entropy 0.56 > 0.5" in gate_reason(VOTE_OK, SafeguardConfig(gate_max_entropy=0.5))
    assert gate_reason(VOTE_OK, SafeguardConfig(gate_max_entropy=0.6)) is None


def feed(monitor, rows):
    return [monitor.update(SimpleNamespace(answer_entropy=h, update=SimpleNamespace(kl=kl), response_length=n))
            for h, kl, n in rows]


def test_monitor_entropy_floor_needs_rising_kl():
    cfg = SafeguardConfig(monitor="stop", monitor_warmup=2, entropy_floor=0.1, length_drop=0.9)
    verdicts = feed(CollapseMonitor(cfg), [(1.0, 0.0, 30), (0.8, 0.01, 30), (0.05, 0.02, 30)])
    assert verdicts[:2] == [None, None] and "answer entropy 0.050 < 0.1 while KL rises" in verdicts[2]
    # low entropy with falling KL is consensus, not collapse
    assert feed(CollapseMonitor(cfg), [(1.0, 0.0, 30), (0.8, 0.05, 30), (0.05, 0.02, 30)])[2] is None


def test_monitor_length_drop_against_warmup_baseline():
    cfg = SafeguardConfig(monitor="rollback", monitor_warmup=2, entropy_floor=0.0, length_drop=0.5)
    v = feed(CollapseMonitor(cfg), [(1, 0, 40), (1, 0, 20), (1, 0, 16), (1, 0, 14)])
    # baseline = (40 + 20) / 2 = 30; 16 >= 15 is fine, 14 < 15 fires
    assert v[:3] == [None, None, None] and "fell below 50% of the warm-up baseline 30.0" in v[3]


def test_monitor_off_never_fires_but_keeps_history():
    m = CollapseMonitor(SafeguardConfig(monitor="off", monitor_warmup=0, entropy_floor=10))
    assert feed(m, [(0, 0, 10), (0, 1, 1)]) == [None, None]
    m2 = CollapseMonitor(SafeguardConfig(monitor="warn"))
    m2.load_state_dict(m.state_dict())
    assert len(m2.history) == 2


def test_early_stopper():
    s = EarlyStopper(SafeguardConfig(early_stop_patience=2, early_stop_delta=0.05))
    assert [s.update(r) for r in (0.5, 0.6, 0.62, 0.64)][:3] == [None, None, None]
    assert "has not improved by 0.05 for 2 steps (best 0.600)" in s.update(0.6)
    off = EarlyStopper(SafeguardConfig())
    assert all(off.update(0.5) is None for _ in range(10))


def test_budgets():
    cfg = SafeguardConfig(max_steps=3, max_tokens=1000, max_seconds=60)
    assert budget_reason(cfg, 2, 999, 59.0) is None
    assert budget_reason(cfg, 3, 0, 0) == "step budget 3 reached"
    assert "token budget 1000" in budget_reason(cfg, 0, 1000, 0)
    assert "time budget 60 s" in budget_reason(cfg, 0, 0, 61.0)
    assert budget_reason(SafeguardConfig(), 10**6, 10**9, 1e9) is None
