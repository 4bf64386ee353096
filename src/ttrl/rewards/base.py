"""The reward interface: a pure function over one group of N samples of the same query.

    fn(group: Group, params, ctx: RewardContext) -> RewardOutput

Rewards see a `Group` (ttrl/group.py: query without label, responses, extracted answers and their
equivalence classes) and never a label. Each reward registers by name with a params dataclass whose fields
carry a default and a one-line help citing the source; the CLI and YAML are generated from them.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..group import Group


@dataclass
class RewardContext:
    """What a reward may use besides the group. One context lives for a whole run."""

    rng: np.random.Generator  # seeded: same seed, same rewards
    policy: Any = None  # the policy itself, for rewards that ask it (self_judge); needs={"policy"}
    # a frozen model that judges instead of the policy (Meta-TTRL's external introspector, --introspector); None =
    # the policy judges itself
    introspector: Any = None
    # run-long memory a reward family may keep, keyed by the family's name: plain picklable data (a
    # buffer of recent anchors, running answer shares) is checkpointed with the run; keys starting
    # with "_" are caches rebuilt on demand (a loaded embedder) and are not
    state: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.state.items() if not k.startswith("_")})

    def load_state_dict(self, state: dict) -> None:
        self.state = {**{k: v for k, v in self.state.items() if k.startswith("_")}, **copy.deepcopy(state)}


@dataclass
class RewardOutput:
    rewards: list[float]
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class RewardSpec:
    name: str
    fn: Callable[[Group, Any, RewardContext], RewardOutput]
    params: type
    help: str
    # True when, for these params, the reward is the same for every sample of a group: group
    # normalisation then removes it entirely (TTRV's entropy term as published).
    group_constant: Callable[[Any], bool] = lambda p: False
    # what the reward needs beyond answers: "token_stats" (Group.token_stats), "policy" (ctx.policy)
    needs: frozenset[str] = frozenset()


REWARDS: dict[str, RewardSpec] = {}


def register_reward(name: str, help: str, params: type = NoParams, group_constant=None, needs=()):
    def deco(fn):
        REWARDS[name] = RewardSpec(name, fn, params, help, group_constant or (lambda p: False), frozenset(needs))
        return fn

    return deco


def all_rewards() -> dict[str, RewardSpec]:
    from . import _load_all  # noqa: F401  (registers the built-in families)

    return REWARDS


class RewardError(ValueError):
    pass


_TERM = re.compile(r"^\s*(?:(?P<w>[-+]?\d*\.?\d+(?:e[-+]?\d+)?)\s*\*\s*)?(?P<name>[A-Za-z_][\w]*)\s*$")


def parse_reward_spec(spec: str) -> list[tuple[float, str]]:
    """'frequency + 0.5*self_certainty' -> [(1.0, 'frequency'), (0.5, 'self_certainty')]."""
    rewards = all_rewards()
    terms = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if not m:
            raise RewardError(f"reward {spec!r}: cannot parse term {part.strip()!r} (expected NAME or WEIGHT*NAME)")
        name = m.group("name")
        if name not in rewards:
            raise RewardError(f"reward {spec!r}: unknown reward {name!r}; choose from: {', '.join(sorted(rewards))}")
        terms.append((float(m.group("w") or 1.0), name))
    return terms


class Reward:
    """A weighted sum of registered rewards, built from a spec string and per-reward params."""

    def __init__(self, spec: str, params: dict[str, Any] | None = None):
        self.spec = spec
        self.terms = parse_reward_spec(spec)
        rewards = all_rewards()
        params = params or {}
        self.params = {n: params.get(n) or rewards[n].params() for _, n in self.terms}
        self._specs = {n: rewards[n] for _, n in self.terms}

    @property
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(s.needs for s in self._specs.values()))

    def group_constant_terms(self) -> list[str]:
        return [n for _, n in self.terms if self._specs[n].group_constant(self.params[n])]

    def __call__(self, group: Group, ctx: RewardContext) -> RewardOutput:
        total = np.zeros(len(group))
        diags: dict[str, float] = {}
        single = len(self.terms) == 1
        for w, name in self.terms:
            out = self._specs[name].fn(group, self.params[name], ctx)
            if len(out.rewards) != len(group):
                raise RewardError(f"reward {name!r} returned {len(out.rewards)} rewards for {len(group)} samples")
            total += w * np.asarray(out.rewards, dtype=float)
            for k, v in out.diagnostics.items():
                diags[k if single else f"{name}/{k}"] = v
        return RewardOutput(total.tolist(), diags)


def params_fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []


def build_params(values: dict[str, Any]) -> dict[str, Any]:
    """Each reward's params dataclass from {reward_name: {field: value} or a params instance}
    (cfg.reward.reward_params, an engine's config), rejecting unknown rewards and fields with errors (ConfigError,
    a ValueError) that name them."""
    from ..config import ConfigError, checked_value, field_types

    rewards = all_rewards()
    out = {}
    for name, fields in (values or {}).items():
        if name not in rewards:
            raise ConfigError(f"reward.reward_params: unknown reward {name!r}")
        cls = rewards[name].params
        if isinstance(fields, cls):
            out[name] = fields
            continue
        types = field_types(cls)
        kwargs = {}
        for k, v in (fields or {}).items():
            if k not in types:
                raise ConfigError(f"reward.reward_params.{name}: unknown field {k!r} (fields: {', '.join(types) or 'none'})")
            kwargs[k] = checked_value(cls, k, v, types[k], f"reward.reward_params.{name}.{k}")
        out[name] = cls(**kwargs)
    return out
