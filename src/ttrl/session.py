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

from .config import Config, build_reward_params
from .data import DataError, Dataset, Item, Query, iter_jsonl
from .evaluate import make_scorer
from .extractors import Extractor, get_extractor, infer_answer_type
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
    if cfg.data.answer_type != "auto":
        return cfg.data.answer_type
    answers = [it.answer for it in dataset.items if it.answer is not None]
    has_choices = any(it.query.choices for it in dataset.items)
    kind = infer_answer_type(answers, has_choices)
    if not answers and not has_choices:
        warnings.warn(f"{dataset.name}: no labels to infer the answer type from; using {kind!r} "
                      "(pass --answer-type to choose)", stacklevel=2)
    return kind


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
    stream: Callable | None = None  # online/episodic over a JSONL file or stdin: yields (line, Item | DataError)
    known: dict = field(default_factory=dict)  # id -> Item seen so far, for label metrics
    context: int | None = None  # the model's context in tokens (None: unknown, not checked)

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

    def too_long(self, item: Item) -> str | None:
        """Why this item's prompt cannot be answered within the model's context, or None."""
        if self.context is None:
            return None
        return too_long(item, self.policy.prompt_length(item.query, self.instruction), self.context, _budget(self.cfg))


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
        if spec != "-" and not Path(spec).is_file():
            raise DataError(spec, None, None, "is a folder, not a JSONL file" if Path(spec).is_dir() else "no such file")
        head = [] if spec == "-" else [e for _, e in islice(iter_jsonl(spec), 200) if isinstance(e, Item)]
        dataset = Dataset(Path(spec).stem, head)

        def stream():
            return iter_jsonl(spec)  # (line, Item | DataError)
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
    report = not resume and stream is None  # a stream's items are checked (and reported) as they arrive
    items = usable(items, out, report=report)
    pool = usable(pool, out, report=report) if cfg.data.adapt_data else items
    policy = make_policy(cfg, need_reference=cfg.grpo.kl_coef > 0)
    if dataset.items and any(it.query.images for it in dataset.items) and not isinstance(policy, HFVisionPolicy):
        raise DataError(spec, None, "image", f"items have images but {cfg.model.model!r} is a text-only model")
    context = context_limit(policy)
    if context is not None:
        lengths = {it.query: policy.prompt_length(it.query, instruction) for it in items + pool}
        fit_budgets(cfg, list(lengths.values()), context)
        if stream is None:
            items = fitting(items, lengths, context, cfg, out, report)
            pool = fitting(pool, lengths, context, cfg, out, report) if cfg.data.adapt_data else items
    k = cfg.data.adapt_size or len(pool)
    rng = np.random.default_rng(cfg.run.seed)
    adapt_items = [pool[i] for i in sorted(rng.permutation(len(pool))[:k])]
    trainer = Trainer(policy, extractor, reward, cfg.sampling, cfg.grpo, instruction, cfg.run.seed, cfg.safeguards)
    return Session(cfg, dataset, items, adapt_items, extractor, answer_type, instruction, policy, reward, trainer,
                   out, score, resume, trainer.snapshot(), adapt_score=adapt_score, stream=stream, context=context)


def context_limit(policy) -> int | None:
    """The model's context in tokens: max_position_embeddings (of the text model), or the tokenizer's
    model_max_length when that is a real value (tokenizers without one report 1e30)."""
    mcfg = policy.model.config
    text = mcfg.get_text_config() if hasattr(mcfg, "get_text_config") else mcfg
    found = [getattr(text, "max_position_embeddings", None), getattr(policy.tokenizer, "model_max_length", None)]
    found = [int(x) for x in found if isinstance(x, int) and 0 < x < 10**7]
    return min(found) if found else None


def _budget(cfg: Config) -> int:
    return max(cfg.sampling.max_new_tokens, cfg.sampling.eval_max_new_tokens)


def capped_budget(budget: int, lengths: list[int], context: int) -> int:
    """New tokens to allow: the asked budget, unless even the shortest prompt leaves less room than that;
    then the room the longest prompt of at most half the context leaves (longer prompts are skipped)."""
    if min(lengths, default=0) + budget <= context:
        return budget
    longest = max((n for n in lengths if n <= context // 2), default=context // 2)
    return max(1, context - longest)


def fit_budgets(cfg: Config, lengths: list[int], context: int) -> None:
    """Cap max_new_tokens and eval_max_new_tokens to what the model's context leaves, with a warning."""
    s = cfg.sampling
    for name in ("max_new_tokens", "eval_max_new_tokens"):
        asked = getattr(s, name)
        capped = capped_budget(asked, lengths, context)
        if capped != asked:
            warnings.warn(f"{name} {asked} does not fit the model's context of {context} tokens with these prompts; "
                          f"capped to {capped}", stacklevel=2)
            setattr(s, name, capped)


def too_long(item: Item, n_prompt: int, context: int | None, budget: int) -> str | None:
    if context is None or n_prompt + budget <= context:
        return None
    return (f"item {item.query.id!r}: prompt of {n_prompt} tokens + {budget} new tokens exceeds the model's context "
            f"of {context} tokens (skipped)")


def fitting(items: list[Item], lengths: dict[Query, int], context: int, cfg: Config, out: RunDir,
            report: bool = True) -> list[Item]:
    """Items whose prompt and answer fit the model's context; each other one is reported and left out
    (a prompt far past the context would otherwise run the machine out of memory)."""
    good = []
    for it in items:
        reason = too_long(it, lengths[it.query], context, _budget(cfg))
        if reason is None:
            good.append(it)
            continue
        log.error(reason)
        if report:
            out.append("events.jsonl", {"step": 0, "event": "bad_input", "reason": reason, "item": it.query.id})
    return good


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
