"""Everything a protocol needs, built from a Config: data, policy, extractor, reward, trainer, run folder."""
from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path

import numpy as np
import torch

from .backends import Backend, all_backends, backend_name
from .config import Config, ConfigError
from .data import DataError, Dataset, Item, Query, iter_jsonl
from .engines import all_engines
from .evaluate import make_scorer
from .extractors import EXTRACTORS, Extractor, get_extractor
from .rewards import Reward, RewardError
from .rewards.base import build_params
from .runlog import RunDir
from .seeds import derive, use_deterministic_kernels
from .tasks import load_dataset
from .trainer import StepResult, Trainer
from .zoo import resolve_model

log = logging.getLogger(__name__)


def seed_everything(run_seed: int) -> None:
    """The global generators (used by libraries, e.g. sampling in transformers' generate), from the run seed."""
    seed = derive(run_seed, "global") % 2**32  # numpy's legacy seed takes 32 bits
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
    policy: Backend
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
    images: bool = False  # a text-to-image run (unified model): the protocol evaluates with the pixel checker

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
            maj = g.group.majority_class
            for a, c in zip(g.group.answers, g.group.classes):
                voted = maj is not None and c == maj
                reward_ok.append(voted == bool(score(a, item)))
        if not label_ok:
            return {}
        return {"label_accuracy": float(np.mean(label_ok)), "reward_accuracy": float(np.mean(reward_ok))}

    def too_long(self, item: Item) -> str | None:
        """Why this item's prompt cannot be answered within the model's context, or None."""
        if self.context is None:
            return None
        return too_long(item, self.policy.prompt_length(item.query, self.instruction), self.context, _budget(self.cfg))


def check_names(cfg: Config) -> None:
    """Names the registries must know (reward, reward params, answer type, backend, engine), checked before
    anything slow. Here rather than in config.py, which stays below every registry."""
    try:
        Reward(cfg.reward.reward, build_params(cfg.reward.reward_params))
    except RewardError as e:
        raise ConfigError(str(e)) from None
    if cfg.data.answer_type != "auto" and cfg.data.answer_type not in EXTRACTORS:
        raise ConfigError(f"answer_type {cfg.data.answer_type!r} is not one of auto, {', '.join(sorted(EXTRACTORS))}")
    for what, name, known in (("backend", cfg.model.backend, all_backends()), ("decoder", cfg.model.decoder, all_engines())):
        if name != "auto" and name not in known:
            raise ConfigError(f"{what} {name!r} is not one of auto, {', '.join(sorted(known))}")


def _stream_head(spec: str):
    """(items seen ahead, a function giving the whole stream of (line, Item | DataError)) for an online run over a
    JSONL file or stdin. A file
    is peeked at (200 lines) and read again; stdin is peeked at its first line only (it is live), which is then
    replayed, so a file and the same lines on stdin resolve the same answer type."""
    if spec != "-":
        if not Path(spec).is_file():
            raise DataError(spec, None, None, "is a folder, not a JSONL file" if Path(spec).is_dir() else "no such file")
        head = [e for _, e in islice(iter_jsonl(spec), 200) if isinstance(e, Item)]
        return head, lambda: iter_jsonl(spec)
    lines = iter_jsonl(spec)
    first = list(islice(lines, 1))
    return [e for _, e in first if isinstance(e, Item)], lambda: chain(first, lines)


def build_session(cfg: Config, out: RunDir, resume: bool = False) -> Session:
    seed_everything(cfg.run.seed)
    use_deterministic_kernels(cfg.run.deterministic)
    check_names(cfg)
    reward = Reward(cfg.reward.reward, build_params(cfg.reward.reward_params))
    for name in reward.group_constant_terms():  # centring alone removes a group constant
        warnings.warn(f"reward {name!r} with these params is the same for every sample of a group: "
                      "group-normalised advantages remove it, so it has no effect on training", stacklevel=2)
    stream = None
    spec = cfg.data.data
    if cfg.protocol.protocol in ("online", "episodic") and (spec == "-" or Path(spec).suffix == ".jsonl"):
        head, stream = _stream_head(spec)  # read line by line while the run goes: (line, Item | DataError)
        dataset = Dataset(Path(spec).stem, head)
    else:
        dataset = load_dataset(spec, cfg.data.source_args(), cfg.data.task_size, cfg.data.data_seed)
    images = draws_images(cfg)
    if images and cfg.protocol.protocol != "transductive":
        raise ConfigError(f"protocol {cfg.protocol.protocol!r}: text-to-image runs adapt on a cohort of prompts "
                          "(Meta-TTRL); use --protocol transductive")
    if cfg.image.introspector and not images:
        raise ConfigError(f"introspector {cfg.image.introspector!r}: only text-to-image runs (a unified model as "
                          "--model) use an introspector")
    if cfg.image.introspector and not hasattr(_backend_cls(cfg, cfg.image.introspector), "yes_probability"):
        raise ConfigError(f"introspector {cfg.image.introspector!r}: its backend cannot answer yes/no questions about "
                          "images; it must be a unified model (e.g. a Janus folder)")
    # an image run's responses are PNG paths: the text extractor only names them (no vote is read from them)
    answer_type = "text" if images else resolve_answer_type(cfg, dataset)
    extractor = get_extractor(answer_type, rel_tol=cfg.data.rel_tol, synonyms=cfg.data.synonyms)
    instruction = cfg.model.instruction or ("" if images else extractor.instruction)
    items = dataset.items[: cfg.data.eval_size] if cfg.data.eval_size else list(dataset.items)
    score = adapt_score = make_scorer(dataset, extractor)
    pool = items
    if cfg.data.adapt_data:  # cross-data-set transfer: adapt on another source, evaluate on this one
        adapt_set = load_dataset(cfg.data.adapt_data, cfg.data.adapt_task_args, cfg.data.task_size,
                                 derive(cfg.data.data_seed, "adapt_data"))
        pool, adapt_score = adapt_set.items, make_scorer(adapt_set, extractor)
    policy = make_policy(cfg, need_reference=cfg.grpo.kl_coef > 0)
    modalities = {m for it in dataset.items + pool for m in it.query.modalities}
    if modalities - policy.modalities:
        raise DataError(spec, None, ", ".join(sorted(modalities - policy.modalities)),
                        f"items carry {sorted(modalities)} but {cfg.model.model!r} ({policy.backend_name} backend) reads "
                        f"{sorted(policy.modalities) or 'text only'}")
    report = not resume and stream is None  # a stream's items are checked (and reported) as they arrive
    items = usable(items, policy, out, report=report)
    pool = usable(pool, policy, out, report=report) if cfg.data.adapt_data else items
    context = context_limit(policy)
    if context is not None:
        lengths = {it.query: policy.prompt_length(it.query, instruction) for it in items + pool}
        fit_budgets(cfg, list(lengths.values()), context)
        if stream is None:
            items = fitting(items, lengths, context, cfg, out, report)
            pool = fitting(pool, lengths, context, cfg, out, report) if cfg.data.adapt_data else items
    k = cfg.data.adapt_size or len(pool)
    rng = np.random.default_rng(derive(cfg.run.seed, "adapt_items"))
    adapt_items = [pool[i] for i in sorted(rng.permutation(len(pool))[:k])]
    args = (policy, extractor, reward, cfg.sampling, cfg.grpo, instruction, cfg.run.seed, cfg.safeguards)
    if images:
        from .image_trainer import ImageTrainer

        trainer = ImageTrainer(*args, image_dir=out.path / "images" / "adapt" if cfg.image.keep_adapt_images else None)
        if cfg.image.introspector:
            trainer.ctx.introspector = make_introspector(cfg)
    else:
        trainer = Trainer(*args)
    return Session(cfg, dataset, items, adapt_items, extractor, answer_type, instruction, policy, reward, trainer,
                   out, score, resume, trainer.snapshot(), adapt_score=adapt_score, stream=stream, context=context,
                   images=images)


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


def usable(items: list[Item], policy: Backend, out: RunDir, report: bool = True) -> list[Item]:
    """Items whose inputs the backend can read (images open, ...); each bad one is reported (naming the item and
    file) and left out, so one broken file costs that item only."""
    good = []
    for it in items:
        try:
            policy.check(it.query)
        except DataError as e:
            msg = f"item {it.query.id!r}: {e} (skipped)"
            log.error(msg)
            if report:
                out.append("events.jsonl", {"step": 0, "event": "bad_input", "reason": msg, "item": it.query.id})
            continue
        good.append(it)
    return good


def _backend_cls(cfg: Config, model: str):
    return all_backends()[backend_name(cfg.model.backend if model == cfg.model.model else "auto",
                                       resolve_model(model))].cls


def draws_images(cfg: Config) -> bool:
    """Whether the policy is a unified text-to-image model (backends/unified.py: it offers generate_images)."""
    return hasattr(_backend_cls(cfg, cfg.model.model), "generate_images")


def image_options(cfg: Config):
    from .backends.unified import ImageGenOptions

    c = cfg.image
    return ImageGenOptions(guidance=c.guidance_scale, temperature=c.image_temperature, batch_size=c.image_batch_size,
                           yes_no_instruction=c.yes_no_instruction)


def make_policy(cfg: Config, need_reference: bool) -> Backend:
    """The configured backend, or (auto) the one the model's config names (backends/base.py: backend_name)."""
    cls = _backend_cls(cfg, cfg.model.model)
    extra = {"options": image_options(cfg)} if hasattr(cls, "generate_images") else {}
    return cls(cfg.model, need_reference=need_reference, seed=cfg.run.seed, **extra)


def make_introspector(cfg: Config):
    """The external introspector (--introspector): a frozen unified model on the policy's device and dtype, its own
    weights only (no adapter, no reference copy); it must answer yes/no questions about images."""
    cls = _backend_cls(cfg, cfg.image.introspector)
    mc = dataclasses.replace(cfg.model, model=cfg.image.introspector, backend="auto", finetune="full")
    judge = cls(mc, need_reference=False, seed=derive(cfg.run.seed, "introspector"), options=image_options(cfg))
    for p in judge.model.parameters():
        p.requires_grad_(False)
    return judge
