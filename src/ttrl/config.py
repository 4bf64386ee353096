"""Typed run configuration. Every constant has a default and a one-line help (citing its source);
the CLI flags and the YAML schema are generated from these dataclasses, so there is one place to look.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def opt(default, help: str, choices=None, *, ge=None, gt=None, le=None, lt=None):
    """A config field: default, one-line help, and the allowed values (choices or bounds), checked once
    after YAML and flags are merged (validate_config)."""
    meta = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# The default task: two-term additions of 1-2 digit numbers. Measured on SmolLM2-135M-Instruct
# (48 items): greedy 52%, single samples at T=0.7 35%, majority of 8 60% -> room to sharpen.
DEFAULT_TASK_ARGS = {
    "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
    "operators": ["+"], "allow_parentheses": False, "allow_negation": False,
}


@dataclass
class ModelConfig:
    model: str = opt("smollm2-135m", "zoo name (smollm2-135m, tiny-vlm), local Hugging Face folder, or hub id")
    backend: str = opt("auto", "model backend: auto (read from the model's config: speech for Whisper, vision when it "
                       "has a vision part, else causal) or a backend name (`ttrl backends`)")
    train_vision: bool = opt(False, "vision models: also train the vision tower and projector (default frozen)")
    train_encoder: bool = opt(False, "speech models: also train the audio encoder, full weights (default frozen: its "
                              "outputs are then computed once per clip and reused)")
    language: str = opt("en", "speech models, multilingual Whisper: the language of the decoder prompt "
                        "(<|en|>; Whisper's language codes)")
    device: str = opt("auto", "auto (cuda > mps > cpu), or a torch device string")
    dtype: str = opt("auto", "weight dtype: auto (bfloat16 on GPUs that support it, else float32), float32, bfloat16, float16",
                     ["auto", "float32", "bfloat16", "float16"])
    autocast: str = opt("auto", "compute dtype for matmuls: auto (bfloat16 on GPUs with fast bf16; none on CPU, where "
                       "bf16 kernels are not reproducible across processes), bfloat16, none",
                        ["auto", "bfloat16", "float16", "float32", "none"])
    finetune: str = opt("lora", "lora (peft; the reference policy is the adapter switched off) or full", ["lora", "full"])
    lora_r: int = opt(16, "LoRA rank (Hu et al. 2021)", ge=1)
    lora_alpha: int = opt(32, "LoRA scaling alpha", gt=0)
    lora_dropout: float = opt(0.0, "LoRA dropout (Hu et al. 2021), applied in the update's gradient pass only; sampling "
                              "and the ratio's old log-probs stay dropout-free", ge=0, lt=1)
    lora_targets: str = opt("all-linear", "modules to adapt: all-linear or a comma-separated list of module names "
                            "(speech models: all-linear means the decoder's attention projections q,k,v,out)")
    merge_for_sampling: bool = opt(True, "sample from merged LoRA copies (2x faster HF generate; a transient copy of "
                                   "the adapted layers; exact, base weights untouched)")
    cast_for_sampling: bool = opt(True, "sample from linear weights pre-cast to the autocast dtype (exact: the values "
                                  "autocast would compute with, without re-casting every weight at every token)")
    decoder: str = opt("auto", "rollout engine: lean (shared prefill, finished rows leave the batch; text models "
                       "and LLaVA-type VLMs), hf (transformers generate), llamacpp (llama.cpp sequences on F32 "
                       "weights + the LoRA adapter synced each step; llama-architecture text models; needs "
                       "llama-cpp-python), auto (lean where supported)")
    llamacpp_weights: str = opt("f32", "decoder llamacpp: weight type of its copy of the base model. f32 samples from "
                                "the policy itself; f16 and q8_0 read 2x / 4x less memory per token but sample from a "
                                "slightly different policy, reweighted by grpo.tis_cap (Yao et al. 2025; q8_0 learned less on "
                                "average than exact sampling in six seeds of the default run, docs/performance.md)",
                                ["f32", "f16", "q8_0"])
    share_prompt: bool = opt(True, "score a group's completions against one pass over their shared prompt (its KV "
                             "cache, with gradients) instead of re-running the prompt for every sample")
    gradient_checkpointing: bool = opt(False, "recompute each decoder layer's activations in the backward pass instead of "
                                       "keeping them (Chen et al. 2016): same gradients, about 40% less update memory; "
                                       "update time -10% to +5% here (bench/memory.py, bench/step_time.py)")
    system_prompt: str = opt("", "system message; empty = the chat template's default")
    instruction: str = opt("", "answer-format instruction appended to each prompt; empty = the extractor's own")


DEFAULT_DATA = "rg:basic_arithmetic"


@dataclass
class DataConfig:
    data: str = opt(DEFAULT_DATA, "JSONL file or built-in task (rg:NAME from reasoning-gym, easyvqa:SPLIT, ...)")
    task_args: dict = opt(DEFAULT_TASK_ARGS, "arguments for a built-in task's generator (YAML mapping / JSON on the CLI)")
    task_size: int = opt(100, "items generated for a built-in task", ge=1)
    data_seed: int = opt(0, "seed of a built-in task's items (generation or sample); independent of the run seed, so "
                         "runs with different seeds are compared on the same items", ge=0)
    answer_type: str = opt("auto", "extractor: number, choice, label, math, text, or auto: choice when items have "
                           "choices, else the format the built-in task declares (never inferred from labels; a JSONL "
                           "file without choices needs this set)")
    rel_tol: float = opt(1e-6, "number extractor: relative tolerance under which two numbers are one answer", ge=0)
    synonyms: dict = opt({}, "label extractor: {variant: canonical label}, e.g. {grey: gray}")
    adapt_size: int = opt(32, "K: unlabeled items adapted on (transductive protocol, TTRV: 20); 0 = all", ge=0)
    adapt_data: str = opt("", "adapt on items from this source instead of the evaluation set (cross-data-set "
                          "transfer, TTRV); empty = the evaluation set")
    adapt_task_args: dict = opt({}, "task arguments for adapt_data (built-in tasks)")
    eval_size: int = opt(0, "items evaluated; 0 = all", ge=0)

    def source_args(self) -> dict:
        """task_args for the configured source. The default arguments belong to the default task, so another
        built-in task given without --task-args gets its own defaults rather than rg:basic_arithmetic's."""
        if self.task_args == DEFAULT_TASK_ARGS and self.data != DEFAULT_DATA:
            return {}
        return dict(self.task_args)


@dataclass
class SamplingConfig:
    n_votes: int = opt(8, "N samples per prompt that vote / are rewarded (TTRL: 64)", ge=1)
    n_train: int = opt(8, "samples per prompt trained on, drawn from the N votes (TTRL: 32)", ge=1)
    temperature: float = opt(0.7, "rollout temperature (TTRL/TTRV: 1.0 on 1.5B+ models; 0.7 suits a 135M model)",
                              gt=0)
    top_p: float = opt(1.0, "rollout nucleus sampling", gt=0, le=1)
    max_new_tokens: int = opt(48, "token budget per rollout (capped to what the model's context leaves)", ge=1)
    eval_max_new_tokens: int = opt(48, "token budget per greedy evaluation answer", ge=1)
    batch_size: int = opt(32, "sequences generated at once", ge=1)
    choice_orders: int = opt(1, "multiple-choice items: rollouts see the options in this many orders (the original plus "
                             "random permutations, n_votes split evenly) and vote on the option, not its letter, which "
                             "removes the letter prior (permutation debiasing, Zheng et al. 2024); 1 = off", ge=1)


@dataclass
class GRPOConfig:
    lr: float = opt(1e-4, "AdamW learning rate (TTRL full fine-tune: 5e-7; LoRA needs far more; SmolLM2 default run, "
                    "seeds 0-2: 2e-4 gave 21/68/65%, 1e-4 68/64/68%, docs/results.md)", ge=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    kl_coef: float = opt(0.001, "per-token k3 KL penalty to the reference policy (TTRL/TTRV: 0.001)", ge=0)
    clip_eps: float = opt(0.2, "PPO ratio clip (Schulman et al. 2017)", gt=0)
    ppo_epochs: int = opt(1, "optimisation passes over each batch of rollouts (1 = on-policy)", ge=1)
    max_grad_norm: float = opt(1.0, "gradient clipping norm", gt=0)
    adv_eps: float = opt(1e-6, "epsilon in (r - mean) / (std + eps)", ge=0)
    scale_advantages: bool = opt(True, "divide advantages by the group std (GRPO); false = Dr. GRPO")
    adv_std: str = opt("unbiased", "group std in the advantage: unbiased (n - 1, as TRL's GRPOTrainer and verl) or "
                       "population (n)", ["unbiased", "population"])
    adv_baseline: str = opt("group", "advantage baseline: group = each group's own mean (GRPO; a unanimous group gives "
                            "no signal); batch = the mean and std over all groups of the step (REINFORCE++, Hu et al. "
                            "2025), so confident items train too, as in pseudo-label self-training (no gain on easy-vqa under "
                            "salt-and-pepper: docs/results.md)", ["group", "batch"])
    loss_agg: str = opt("token_mean", "token_mean over all trained tokens (DAPO/VERL default) or seq_mean (GRPO paper)", ["token_mean", "seq_mean"])
    unparsed: str = opt("reward", "samples with no parsable answer: reward = trained on the reward they got (0 from a vote: "
                        "the update then also teaches the answer format); neutral = advantage 0, so only the answer "
                        "is rewarded, not its format (docs/results.md: a vote that rewards format shrinks reasoning "
                        "to a bare letter, and a 135M model's bare letter is its letter prior)", ["reward", "neutral"])
    balance_answers: bool = opt(False, "per-answer balanced advantages: subtract from each sample the step's mean "
                                "advantage of the answer it wrote, so the update cannot shift one answer's share "
                                "across items (an answer prior; issue 16, docs/results.md)")
    balance_unit: str = opt("answer", "what --balance-answers keeps from moving across items: the whole answer, or each "
                            "word of it (free text, where the prior is a word: 'triangle' in every description; "
                            "issue 19, balance.py)", ["answer", "word"])
    prompts_per_step: int = opt(4, "prompts (groups) per optimiser step", ge=1)
    micro_batch: int = opt(16, "sequences per forward/backward chunk (gradient accumulation)", ge=1)
    tis_cap: float = opt(2.0, "truncated importance sampling cap C (Yao et al. 2025): tokens from a rollout engine "
                         "that is not exactly the policy (llamacpp_weights f16/q8_0) weigh min(pi/pi_sampler, C); "
                         "0 = no correction", ge=0)


@dataclass
class RewardConfig:
    reward: str = opt("majority", "reward name or weighted sum, e.g. 'frequency+0.5*entropy' (see `ttrl rewards`)")
    reward_params: dict = opt({}, "per-reward parameters, {reward_name: {field: value}} (flags: --REWARD-FIELD)")


@dataclass
class ProtocolConfig:
    protocol: str = opt("transductive", "transductive (TTRV): adapt on K items, then evaluate all; online: answer "
                        "each item of a stream, then adapt on it; episodic: online with the weights reset to the base",
                        ["transductive", "online", "episodic"])
    epochs: int = opt(3, "passes over the adaptation items (TTRV: 2, TTRL: 80)", ge=0)
    base_eval: bool = opt(True, "transductive: also evaluate the base model on the same set in the same run")
    base_maj_votes: int = opt(8, "samples per item for the base model's majority-vote accuracy (0 = skip)", ge=0)
    online_order: str = opt("answer_first", "online/episodic: answer with the current weights, then adapt "
                            "(answer_first, as deployed), or adapt first", ["answer_first", "adapt_first"])
    steps_per_item: int = opt(1, "online/episodic: update steps on each arriving item", ge=1)
    reset_every: int = opt(1, "episodic: reset the weights to the base after every B items", ge=1)


@dataclass
class SafeguardConfig:
    gate_min_majority: float = opt(0.0, "skip updating on a group whose top answer has a smaller share (TTRV's "
                                   "weak-base failure); 0 = off", ge=0)
    gate_max_entropy: float = opt(0.0, "skip updating on a group whose answer entropy (nats) is higher; 0 = off", ge=0)
    gate_require_parsed: bool = opt(True, "skip updating on a group in which no answer parsed")
    monitor: str = opt("off", "collapse monitor action: off, warn, stop, rollback (to the last good adapter), reset "
                       "(to the base adapter: undo all adaptation)", ["off", "warn", "stop", "rollback", "reset"])
    monitor_warmup: int = opt(3, "steps averaged as the baseline of the collapse indicators", ge=1)
    entropy_floor: float = opt(0.05, "collapse when answer entropy falls below this while KL keeps rising (URLVR)", ge=0)
    length_drop: float = opt(0.5, "collapse when mean response length falls by more than this fraction of the "
                             "baseline (SPINE: shrinking responses)", ge=0, le=1)
    prior_monitor: str = opt("warn", "answer-prior monitor action (one answer taking over ACROSS items, which the per-group "
                             "indicators cannot see): off, warn, stop, rollback, reset (to the base adapter: the "
                             "vote's prior can do its harm in 2 steps, before a verdict is possible; issue 16)",
                             ["off", "warn", "stop", "rollback", "reset"])
    prior_window: int = opt(32, "recent items per answer set whose majority answers the answer-prior monitor counts",
                            ge=1)
    prior_min_items: int = opt(16, "items of an answer set needed in the window before the monitor gives a verdict",
                               ge=1)
    prior_max_share: float = opt(0.9, "answer-prior collapse when one answer is the majority answer of more than this "
                                 "share of the window's items (collapsed runs of issue 16: 0.94 to 1.0)")
    prior_margin: float = opt(0.25, "... and more than the base model's share of its own top answer plus this margin "
                              "(ARC-Easy base: 0.41, collapsed: 1.0)")
    prior_probe_every: int = opt(0, "every this many steps, answer prior_probe_items adaptation items greedily and judge "
                                 "those answers with the answer-prior rules against their greedy answers before the first "
                                 "update: at T 1 the rewarded samples can vary while greedy answers collapse (tiny-omni: "
                                 "'triangle' in 50 of 50 descriptions, unseen by the monitor; issue 19); 0 = off", ge=0)
    prior_probe_items: int = opt(16, "adaptation items the greedy probe answers (queries only)", ge=1)
    early_stop_patience: int = opt(0, "stop when the mean reward has not improved for this many steps; 0 = off", ge=0)
    early_stop_delta: float = opt(0.01, "improvement in mean reward that resets the patience counter", ge=0)
    max_steps: int = opt(0, "budget: update steps; 0 = unlimited", ge=0)
    max_tokens: int = opt(0, "budget: generated rollout tokens; 0 = unlimited", ge=0)
    max_seconds: float = opt(0.0, "budget: seconds of adaptation; 0 = unlimited", ge=0)


@dataclass
class ImageConfig:
    """Text-to-image runs (unified models, backends/t2i.py; Meta-TTRL). n_votes images per prompt are the GRPO
    group (Meta-TTRL's G), prompts_per_step the cohort batch."""

    guidance_scale: float = opt(5.0, "classifier-free guidance w: image-token logits u + w (c - u) (Janus-Pro's "
                                "generation_config and transformers' Janus generate: 5; Meta-TTRL samples Janus-Pro "
                                "with its default); 1 = no guidance", ge=1)
    image_temperature: float = opt(1.0, "image tokens drawn from softmax(guided logits / T), in rollouts and in the "
                                   "update's scoring (Janus-Pro samples at T = 1)", gt=0)
    image_batch_size: int = opt(8, "images sampled per forward batch (each row runs twice with guidance)", ge=1)
    yes_no_instruction: str = opt("Answer with Yes or No.", "appended to each rubric question so the next token is "
                                  "the answer (Meta-TTRL reads P(Yes) and P(No) there)")
    introspector: str = opt("", "another model (a unified model folder, e.g. Janus-Pro-7B) writes the rubric and "
                            "answers its questions instead of the policy (Meta-TTRL's external-introspector "
                            "comparison); empty = the policy judges itself")
    eval_images: int = opt(1, "images per evaluation prompt, checked by the pixel checker (GenEval draws 4)", ge=1)
    eval_greedy: bool = opt(False, "evaluation images by the guided argmax instead of sampling with a fixed seed "
                            "(the same seed before and after adaptation, so only the weights differ)")
    keep_adapt_images: bool = opt(True, "keep the rollout images of every adaptation step in OUT/images/adapt "
                                  "(the rubric judges them from files either way)")


@dataclass
class RunConfig:
    seed: int = opt(0, "seed for data, sampling and rewards: same seed, same numbers (numpy: 0 to 2**32-1)",
                    ge=0, le=2**32 - 1)
    deterministic: bool = opt(True, "torch's deterministic kernels: same seed, same numbers on any thread count "
                              "(off, 2 CPU threads gave 69% and 62% from one seed of the default run)")
    out: str = opt("", "output folder; empty = runs/<date-time>")
    checkpoint_every: int = opt(1, "save adapter + optimizer state every this many steps (atomic) for --resume", ge=1)
    log: str = opt("none", "also log metrics.jsonl rows to an experiment tracker: tensorboard (event files in "
                   "OUT/tensorboard; needs the tensorboard package) or wandb (needs wandb)", ["none", "tensorboard", "wandb"])
    report: bool = opt(True, "write OUT/report.html (summary, curves, events, changed answers) when the run ends")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    safeguards: SafeguardConfig = field(default_factory=SafeguardConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


def sections() -> dict[str, type]:
    return {f.name: f.type if isinstance(f.type, type) else globals()[f.type] for f in dataclasses.fields(Config)}


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """The value as the field's type, or a ConfigError: never a silent change (2.7 does not become 2)."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: expected {expected}, got {value!r}")

    if typ is bool:
        if isinstance(value, bool):
            return value
        low = str(value).lower() if isinstance(value, (str, int)) else None
        if low in {"true", "1", "yes", "on"}:
            return True
        if low in {"false", "0", "no", "off"}:
            return False
        raise bad("a boolean")
    if typ is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{where}: not a valid YAML/JSON mapping ({getattr(e, 'problem', e)}): {value!r}") from None
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    if typ in (int, float, str) and (isinstance(value, bool) or value is None or isinstance(value, (list, dict))):
        raise bad(typ.__name__)
    if typ is int:
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise bad("int")
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad("int") from None
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("float") from None
    if typ is str:
        return str(value)
    try:
        return typ(value)
    except (TypeError, ValueError):
        raise bad(getattr(typ, "__name__", str(typ))) from None


def _flat_index() -> dict[str, tuple[str, str]]:
    """field name -> (section, field); names are unique across sections by construction."""
    index = {}
    for sec, cls in sections().items():
        for f in dataclasses.fields(cls):
            assert f.name not in index, f.name
            index[f.name] = (sec, f.name)
    return index


def apply_overrides(cfg: Config, values: dict[str, Any], source: str, validate: bool = True) -> Config:
    """Apply {section: {field: v}} or flat {field: v} mappings; unknown keys are errors naming the key.
    validate=False when more values follow (YAML, then flags): the merged result is checked once."""
    index = _flat_index()
    secs = sections()
    for key, value in values.items():
        if key in secs and isinstance(value, dict):  # nested section (`reward` is also a flat field)
            for k, v in value.items():
                set_option(cfg, key, k, v, f"{source}: {key}.{k}")
        elif key in index:
            set_option(cfg, *index[key], value, f"{source}: {key}")
        else:
            raise ConfigError(f"{source}: unknown option {key!r}")
    if validate:
        validate_config(cfg)
    return cfg


def set_option(cfg: Config, sec: str, name: str, value: Any, where: str) -> None:
    """Set one field, type-checked; `where` (file and key, or flag) names it in later range errors."""
    obj = getattr(cfg, sec)
    types = field_types(type(obj))
    if name not in types:
        raise ConfigError(f"{where}: unknown option {name!r} in section {sec!r}")
    setattr(obj, name, _checked(type(obj), name, _coerce(value, types[name], where), where))
    cfg.__dict__.setdefault("_where", {})[(sec, name)] = where  # not a dataclass field: never saved


def checked_value(cls: type, name: str, value: Any, typ: Any, where: str) -> Any:
    """`value` coerced to the field's type and checked against its choices (for typed params outside Config)."""
    return _checked(cls, name, _coerce(value, typ, where), where)


def _checked(cls: type, name: str, value: Any, where: str) -> Any:
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(cls)}[name]
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def validate_config(cfg: Config) -> None:
    """Check the merged configuration once: each field's bounds and finiteness, then cross-field rules."""
    where = cfg.__dict__.get("_where", {})
    for sec, cls in sections().items():
        obj = getattr(cfg, sec)
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            name = where.get((sec, f.name), f"{sec}.{f.name}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name}: must be a finite number, got {value!r}")
            for kind, bound in f.metadata.get("bounds", {}).items():
                op, ok = _BOUNDS[kind]
                if not ok(value, bound):
                    raise ConfigError(f"{name}: must be {op} {bound}, got {value!r}")
    s = cfg.sampling
    if s.n_votes % s.choice_orders:
        raise ConfigError(f"sampling: n_votes must split evenly over choice_orders, got n_votes={s.n_votes}, "
                          f"choice_orders={s.choice_orders}")
    if s.n_train > s.n_votes:
        raise ConfigError(f"sampling: need 1 <= n_train <= n_votes, got n_train={s.n_train}, n_votes={s.n_votes}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def save_yaml(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
