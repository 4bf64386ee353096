"""Evaluating a tiny VLM on a fixed stratified subset of easy-vqa TEST: a fast in-memory greedy probe used while
training, and the card's numbers through ttrl's own vision backend (greedy and maj@N with ttrl's sampler)."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence

import torch

from ..media import load_image
from ..tasks.easy_vqa import question_type

KINDS = ("color", "shape", "yesno")


def _instruction() -> str:
    from ..extractors.label import LabelExtractor

    return LabelExtractor.instruction


def user_content(question: str) -> list[dict]:
    """The user turn exactly as ttrl renders it at test time: image, then question + answer format."""
    return [{"type": "image"}, {"type": "text", "text": question.strip() + "\n" + _instruction()}]


def easy_vqa_split(split: str):
    import easy_vqa

    if split == "train":
        qs, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        qs, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return qs, answers, image_ids, paths


def eval_subset(per_type: int = 100, seed: int = 0) -> list[int]:
    """A fixed, stratified subset of easy-vqa TEST: `per_type` questions of each kind (seeded sample).

    Stratified because the test split is 74% yes/no: a plain sample would hold few colour/shape questions.
    """
    qs, _, _, _ = easy_vqa_split("test")
    rng = random.Random(seed)
    picked: list[int] = []
    for kind in KINDS:
        idx = [i for i, q in enumerate(qs) if question_type(q) == kind]
        picked += sorted(rng.sample(idx, per_type))
    return picked


def prompts(processor, questions: Sequence[str]) -> list[str]:
    return [processor.apply_chat_template([{"role": "user", "content": user_content(q)}],
                                          add_generation_prompt=True, tokenize=False) for q in questions]


def _summary(hits: dict[str, list[int]], qs) -> dict:
    acc = {k: sum(v) / len(v) for k, v in hits.items() if v}
    overall = sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    # the test split's own mix (74% yes/no) weights the per-type accuracies differently
    counts = {k: sum(question_type(q) == k for q in qs) for k in hits}
    natural = sum(acc[k] * counts[k] for k in acc) / sum(counts[k] for k in acc)
    return {"overall": overall, **acc, "overall_test_mix": natural}


@torch.no_grad()
def greedy_texts(model, processor, idx: Sequence[int], batch_size: int = 32, autocast: bool = True,
                 max_new_tokens: int = 8, load: Callable = load_image) -> list[str]:
    """The in-memory model's greedy responses to TEST questions `idx` (left-padded batches; bf16 autocast if asked;
    `load` reads an image path, e.g. under a test-time shift)."""
    qs, _, image_ids, paths = easy_vqa_split("test")
    processor.tokenizer.padding_side = "left"
    model.eval()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    texts: list[str] = []
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        enc = processor(text=prompts(processor, [qs[i] for i in chunk]),
                        images=[load(paths[image_ids[i]]) for i in chunk], return_tensors="pt", padding=True)
        with ctx:
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
        texts += processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def evaluate(model, processor, per_type: int = 100, batch_size: int = 32, autocast: bool = True,
             max_new_tokens: int = 8) -> dict:
    """Greedy generation + the `label` extractor on the fixed test subset; accuracy per type and overall
    (in memory, bf16 autocast: the quick probe used during training)."""
    from ..extractors import get_extractor

    extractor = get_extractor("label")
    qs, answers, _, _ = easy_vqa_split("test")
    idx = eval_subset(per_type)
    texts = greedy_texts(model, processor, idx, batch_size, autocast, max_new_tokens)
    hits: dict[str, list[int]] = {k: [] for k in KINDS}
    for i, text in zip(idx, texts):
        hits[question_type(qs[i])].append(int(extractor.extract(text) == answers[i]))
    samples = [{"question": qs[idx[b]], "answer": answers[idx[b]], "response": texts[b]}
               for b in range(0, len(idx), batch_size)]  # the first of each batch, as before
    return {**_summary(hits, qs), "n": len(idx), "samples": samples[:20]}


def evaluate_ttrl(model: str, per_type: int = 100, votes: int = 16, temperature: float | None = None,
                  seed: int = 0, batch_size: int | None = None) -> dict:
    """Base greedy and maj@`votes` per question type on the fixed subset, the way `ttrl run` measures its base
    model: the vision backend (float32 on CPU), ttrl's rollout engine, the `label` extractor and the vote of
    ttrl.group. `temperature` and `batch_size` default to ttrl's sampling config defaults."""
    from ..backends.vision import VisionBackend
    from ..config import ModelConfig, SamplingConfig
    from ..data import Query
    from ..evaluate import answer
    from ..extractors import get_extractor

    s = SamplingConfig()
    temperature = s.temperature if temperature is None else temperature
    batch_size = batch_size or s.batch_size
    extractor = get_extractor("label")
    qs, answers, image_ids, paths = easy_vqa_split("test")
    idx = eval_subset(per_type)
    queries = [Query(f"easyvqa-test-{i}", qs[i], images=(paths[image_ids[i]],)) for i in idx]
    gold = {f"easyvqa-test-{i}": answers[i] for i in idx}
    kind = {f"easyvqa-test-{i}": question_type(qs[i]) for i in idx}
    policy = VisionBackend(ModelConfig(model=model), need_reference=False, seed=seed)
    instr = extractor.instruction
    greedy: dict[str, list[int]] = {k: [] for k in KINDS}
    maj: dict[str, list[int]] = {k: [] for k in KINDS}
    sample_acc: dict[str, list[float]] = {k: [] for k in KINDS}
    top: dict[str, list[int]] = {k: [] for k in KINDS}  # votes for the majority answer, per item
    for g in answer(policy, extractor, queries, instr, max_new_tokens=s.eval_max_new_tokens, batch_size=batch_size,
                    seed=seed, desc=""):
        greedy[kind[g.query.id]].append(int(g.answers[0] == gold[g.query.id]))
    if votes:
        for g in answer(policy, extractor, queries, instr, n=votes, temperature=temperature, top_p=s.top_p,
                        max_new_tokens=s.max_new_tokens, batch_size=batch_size, seed=seed + 1, desc=""):
            k, y = kind[g.query.id], gold[g.query.id]
            maj[k].append(int(g.majority_answer == y))
            sample_acc[k].append(sum(a == y for a in g.answers) / votes)
            top[k].append(g.vote_stats().majority_ratio)
    out = {"greedy": _summary(greedy, qs)}
    if votes:
        out[f"maj@{votes}"] = _summary(maj, qs)
        out["sample"] = _summary({k: [float(x) for x in v] for k, v in sample_acc.items()}, qs)
        out["majority_vote_share"] = {k: sum(v) / len(v) for k, v in top.items() if v}
    out.update({"n": len(idx), "votes": votes, "temperature": temperature, "seed": seed})
    return out
