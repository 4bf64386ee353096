"""Everything a protocol needs, built from a Config: data, policy, extractor, reward, trainer, run folder."""
from __future__ import annotations

import logging
import random
import warnings
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import Config, ConfigError, build_reward_params
from .data import DataError, Dataset, Item, iter_jsonl
from .evaluate import make_scorer
from .extractors import EXTRACTORS, Extractor, get_extractor
from .policy.hf_causal import HFCausalPolicy
from .policy.hf_vlm import HFVisionPolicy
from .policy.zoo import resolve_model
from .rewards import Reward
from .runlog import RunDir
from .tasks import load_dataset
from .trainer import StepResult, Trainer

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_answer_type(cfg: Config, dataset: Dataset) -> str:
    """The extractor's name, from what a label-free user has: the flag, the items' choices, or the format the
    data source declares. Labels never decide it: they would shape the prompt's instruction and the votes."""
    if cfg.data.answer_type != "auto":
        return cfg.data.answer_type
    if any(it.query.choices for it in dataset.items):
        return "choice"
    if dataset.answer_type is not None:
        return dataset.answer_type
    raise ConfigError(f"{cfg.data.data}: the items have no choices and the source declares no answer format; "
                      f"pass --answer-type ({', '.join(sorted(EXTRACTORS))})")


@dataclass
class Session:
    cfg: Config
    dataset: Dataset
    eval_items: list[Item]
    adapt_items: list[Item]
    extractor: Extractor
    answer_type: str
    instruction: str
    policy: HFCausalPolicy
    reward: Reward
    trainer: Trainer
    out: RunDir
    score: Callable
    resume: bool = False
    initial_weights: dict | None = None  # the base adapter, for episodic resets
    adapt_score: Callable | None = None  # scorer of the adaptation items' source (label metrics only)
    stream: Callable | None = None  # online/episodic over a JSONL file or stdin: yields Item | DataError
    known: dict = field(default_factory=dict)  # id -> Item seen so far, for label metrics

    def __post_init__(self):
        self.known.update({it.query.id: it for it in self.adapt_items})

    def label_metrics(self, result: StepResult) -> dict[str, float]:
        """TTRL's label accuracy (pseudo-label correct) and reward accuracy (share of samples whose
        vote reward, a_i == pseudo-label, equals the reward the true label would give)."""
        label_ok, reward_ok = [], []
        for g in result.groups:
            item = self.known.get(g.query_id)
            if item is None or item.answer is None:
                continue
            score = self.adapt_score or self.score
            label_ok.append(bool(score(g.pseudo_label, item)))
            for a in g.answers:
                voted = a is not None and g.pseudo_label is not None and (
                    a == g.pseudo_label or self.extractor.equivalent(a, g.pseudo_label))
                reward_ok.append(voted == bool(score(a, item)))
        if not label_ok:
            return {}
        return {"label_accuracy": float(np.mean(label_ok)), "reward_accuracy": float(np.mean(reward_ok))}


def build_session(cfg: Config, out: RunDir, resume: bool = False) -> Session:
    seed_everything(cfg.run.seed)
    reward = Reward(cfg.reward.reward, build_reward_params(cfg))  # validate before the slow parts
    for name in reward.group_constant_terms():  # centring alone removes a group constant
        warnings.warn(f"reward {name!r} with these params is the same for every sample of a group: "
                      "group-normalised advantages remove it, so it has no effect on training", stacklevel=2)
    stream = None
    spec = cfg.data.data
    if cfg.protocol.protocol in ("online", "episodic") and (spec == "-" or Path(spec).suffix == ".jsonl"):
        # a stream: read line by line while the run goes; peek at the head to infer the answer type
        if spec != "-" and not Path(spec).exists():
            raise DataError(spec, None, None, "no such file")
        head = [] if spec == "-" else [e for _, e in islice(iter_jsonl(spec), 200) if isinstance(e, Item)]
        dataset = Dataset(Path(spec).stem, head)

        def stream():
            return (entry for _, entry in iter_jsonl(spec))
    else:
        dataset = load_dataset(spec, cfg.data.task_args, cfg.data.task_size, cfg.run.seed)
    answer_type = resolve_answer_type(cfg, dataset)
    extractor = get_extractor(answer_type, rel_tol=cfg.data.rel_tol, synonyms=cfg.data.synonyms)
    instruction = cfg.model.instruction or extractor.instruction
    items = dataset.items[: cfg.data.eval_size] if cfg.data.eval_size else list(dataset.items)
    score = adapt_score = make_scorer(dataset, extractor)
    pool = items
    if cfg.data.adapt_data:  # cross-data-set transfer: adapt on another source, evaluate on this one
        adapt_set = load_dataset(cfg.data.adapt_data, cfg.data.adapt_task_args, cfg.data.task_size, cfg.run.seed + 1)
        pool, adapt_score = adapt_set.items, make_scorer(adapt_set, extractor)
    items = usable(items, out, report=not resume)
    pool = usable(pool, out, report=not resume) if cfg.data.adapt_data else items
    k = cfg.data.adapt_size or len(pool)
    rng = np.random.default_rng(cfg.run.seed)
    adapt_items = [pool[i] for i in sorted(rng.permutation(len(pool))[:k])]
    policy = make_policy(cfg, need_reference=cfg.grpo.kl_coef > 0)
    if dataset.items and any(it.query.images for it in dataset.items) and not isinstance(policy, HFVisionPolicy):
        raise DataError(spec, None, "image", f"items have images but {cfg.model.model!r} is a text-only model")
    trainer = Trainer(policy, extractor, reward, cfg.sampling, cfg.grpo, instruction, cfg.run.seed, cfg.safeguards)
    return Session(cfg, dataset, items, adapt_items, extractor, answer_type, instruction, policy, reward, trainer,
                   out, score, resume, trainer.snapshot(), adapt_score=adapt_score, stream=stream)


def usable(items: list[Item], out: RunDir, report: bool = True) -> list[Item]:
    """Items whose images open; each bad one is reported (naming the item and file) and left out, so
    one broken image costs that item only."""
    from .policy.hf_vlm import load_image

    good = []
    for it in items:
        try:
            for path in it.query.images:
                load_image(path)
        except DataError as e:
            msg = f"item {it.query.id!r}: {e} (skipped)"
            log.error(msg)
            if report:
                out.append("events.jsonl", {"step": 0, "event": "bad_input", "reason": msg, "item": it.query.id})
            continue
        good.append(it)
    return good


def make_policy(cfg: Config, need_reference: bool):
    """The vision backend when asked for, or (auto) when the model's config has a vision part."""
    backend = cfg.model.backend
    if backend == "auto":
        from transformers import AutoConfig

        mcfg = AutoConfig.from_pretrained(resolve_model(cfg.model.model))
        backend = "vision" if getattr(mcfg, "vision_config", None) is not None else "causal"
    cls = HFVisionPolicy if backend == "vision" else HFCausalPolicy
    return cls(cfg.model, need_reference=need_reference, seed=cfg.run.seed)
