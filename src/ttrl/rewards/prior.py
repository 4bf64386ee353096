"""A vote with the global answer prior removed: the guard against answer-prior collapse.

On small answer sets (yes/no, A-D letters) a majority vote can drive every item to one answer: each
group may be confident while all groups agree on the same answer (docs/ttrv_ablation.md; the ARC-Easy
run of issue 16). Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") removes a model's
input-independent answer prior by dividing its answer probabilities by the prior. Here the prior is
estimated label-free, at test time, as a running marginal of the groups' answer shares over previous
items that share an answer set:

    m_k(a) = (S_k(a) + alpha / |A_k|) / (W_k + alpha)        S_k(a) <- decay * S_k(a) + p_x(a)   (after each group)
                                                              W_k    <- decay * W_k + 1
    score(a) = p(a | x) / m_k(a) ** beta                      p(a | x) = share of the group's N samples giving a

with k the item's answer-set key, p_x(a) the group's shares among its parsed answers, |A_k| the number
of options (letters) or of answers seen so far, and alpha pseudo-items of a uniform prior, so the first
group is a plain vote. `hard`: the calibrated winner argmax score(a) gets 1, others 0 (TTRL's vote with
the prior removed; beta = 0 is exactly `majority`). `soft`: each sample gets its answer's calibrated
share score(a) / sum_b score(b) (TTRV's frequency reward with the prior removed). Unparsable answers get
0, the lowest reward. The marginal lives in ctx.state["prior_vote"] as plain dicts (checkpointable).
Answers are keyed by their canonical string, so across items equivalent answers written differently
("1/2", "0.5") are separate entries; letters and short labels are canonical already.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..config import ConfigError
from ..data import Query
from ..group import majority_class
from .base import Group, RewardContext, RewardOutput, register_reward

FAMILY = "prior_vote"
GLOBAL = "global"


def answer_set_key(query: Query, key: str = "options") -> str:
    """Which items share an answer marginal. options: items with the same number of lettered options
    (ARC/MMLU letters); option_texts: the same option texts (a fixed label set); global: all items."""
    if key == GLOBAL or not query.choices:
        return GLOBAL
    if key == "options":
        return f"options:{len(query.choices)}"
    if key == "option_texts":
        return "option_texts:" + "\x1f".join(sorted(query.choices))
    raise ValueError(f"prior_vote key must be options, option_texts or global, got {key!r}")


@dataclass(frozen=True)
class PriorVoteParams:
    beta: float = field(default=1.0, metadata={
        "help": "exponent of the running answer marginal the vote share is divided by: 1 = contextual calibration's "
        "division (Zhao et al. 2021), 0 = plain majority / frequency"})
    decay: float = field(default=0.95, metadata={
        "help": "per-item decay of the running marginal: an average over about 1/(1-decay) recent items, so it "
        "follows the adapting model (an EMA, as a running estimate of the prior)"})
    prior_strength: float = field(default=1.0, metadata={
        "help": "alpha: pseudo-items of a uniform marginal the estimate starts from (Dirichlet smoothing), so the "
        "first group is a plain vote and an unseen answer is never divided by zero; must be > 0"})
    form: str = field(default="hard", metadata={
        "help": "hard: 1 for the calibrated winner (TTRL vote, prior removed); soft: the calibrated share of each "
        "answer (TTRV frequency, prior removed)", "choices": ("hard", "soft")})
    key: str = field(default="options", metadata={
        "help": "items sharing a marginal: options (same number of lettered options, e.g. A-D), option_texts (same "
        "option texts), global (all items; free answers such as yes/no labels)",
        "choices": ("options", "option_texts", "global")})

    def __post_init__(self):
        if self.prior_strength <= 0 or not 0.0 <= self.decay <= 1.0 or self.beta < 0:
            raise ConfigError(f"prior_vote needs prior_strength > 0, 0 <= decay <= 1 and beta >= 0; got {self}")


def _marginal(entry: dict, answers: set[str], n_options: int | None, alpha: float) -> dict[str, float]:
    sums, w = entry.get("sums", {}), entry.get("weight", 0.0)
    support = n_options or len(set(sums) | answers)
    return {a: (sums.get(a, 0.0) + alpha / support) / (w + alpha) for a in answers}


def _update(entry: dict, counts: dict[str, int], decay: float) -> None:
    n = sum(counts.values())
    sums = entry.setdefault("sums", {})
    for a in sums:
        sums[a] *= decay
    for a, c in counts.items():
        sums[a] = sums.get(a, 0.0) + c / n
    entry["weight"] = decay * entry.get("weight", 0.0) + 1.0


@register_reward(
    FAMILY,
    help="Majority vote with the global answer prior removed (contextual calibration, Zhao et al. 2021): the vote "
    "share p(a|x) divided by a running marginal of a over previous items with the same answer set; guards "
    "against answer-prior collapse on small answer sets.",
    params=PriorVoteParams,
)
def prior_vote(group: Group, params: PriorVoteParams, ctx: RewardContext) -> RewardOutput:
    n = len(group)
    rep: dict[int, str] = {}  # class -> its first answer string (the canonical answer the marginal is keyed by)
    for a, c in zip(group.answers, group.classes):
        if c is not None:
            rep.setdefault(c, a)
    if not rep:
        return RewardOutput([0.0] * n, {"flipped": 0.0, "winner_marginal": 0.0, "top_marginal": 0.0})

    key = answer_set_key(group.query, params.key)
    entry = ctx.state.setdefault(FAMILY, {}).setdefault(key, {})
    counts = Counter(c for c in group.classes if c is not None)
    n_options = len(group.query.choices) if group.query.choices and params.key != GLOBAL else None
    m = _marginal(entry, set(entry.get("sums", {})) | set(rep.values()), n_options, params.prior_strength)
    score = {c: (k / n) / m[rep[c]] ** params.beta for c, k in counts.items()}

    # ties: more votes first, then the class seen first (as in `majority`), so beta = 0 is `majority`
    winner = min(score, key=lambda c: (-score[c], -counts[c], c))
    if params.form == "hard":
        rewards = [float(c is not None and c == winner) for c in group.classes]
    elif params.form == "soft":
        total = sum(score.values())
        rewards = [0.0 if c is None else score[c] / total for c in group.classes]
    else:
        raise ValueError(f"prior_vote form must be 'hard' or 'soft', got {params.form!r}")

    diags = {
        "flipped": float(winner != majority_class(group.classes)),  # the prior changed the vote's answer
        "winner_marginal": m[rep[winner]],
        "top_marginal": max(m.values()),  # the running prior's most common answer, this key
    }
    # the marginal is over previous items: this group joins it only after its own reward
    _update(entry, {rep[c]: k for c, k in counts.items()}, params.decay)
    return RewardOutput(rewards, diags)
