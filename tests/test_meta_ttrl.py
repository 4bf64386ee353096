"""Meta-TTRL rubrics from messy model output, the rule-based fallback, and the reward arithmetic (hand-computed)."""
import math

import pytest

from ttrl.rewards import all_rewards
from ttrl.rewards.meta_ttrl import geometric_mean, meta_ttrl_rewards, rubric_scores, yes_share
from ttrl.rubric import build_rubric, parse_rubric, rubric_request, rule_rubric

MESSY = """Sure! Here are some verification questions for the image:

1. Is there a blue circle?
2) **Is the circle blue**
- Is there a red square? Is the square below the circle?
* is there a  blue circle ?
Q5: Are there exactly two shapes (yes/no)?
   6. What colour is the square?
a) Does the image have a white background.
### Notes
Answer: Yes
Thanks, hope this helps!
"""


def test_parse_messy_rubric():
    assert parse_rubric(MESSY) == [
        "Is there a blue circle?",  # numbered; its lower-case, double-spaced duplicate (bullet) is dropped
        "Is the circle blue?",  # markdown bold, no question mark
        "Is there a red square?",  # two questions on one bulleted line
        "Is the square below the circle?",
        "Are there exactly two shapes?",  # "Q5:" prefix, "(yes/no)" note
        "Does the image have a white background?",  # lettered, ends with a full stop
    ]  # "What colour ...?" has no yes/no answer; preamble, header, "Answer: Yes" and sign-off are junk


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("I cannot help with that.", []),
    ("Is it?", []),  # too short to verify anything
    ("Question 1: Is the triangle green?\nQuestion 2: Is the triangle green", ["Is the triangle green?"]),
    ("1. Is there a cat?2. Is the cat black?", ["Is there a cat?", "Is the cat black?"]),
    ("- \"Is the dog brown?\"\n(3) Can you see a tree", ["Is the dog brown?", "Can you see a tree?"]),
])
def test_parse_rubric_cases(text, expected):
    assert parse_rubric(text) == expected


def test_parse_rubric_caps_questions():
    text = "\n".join(f"{i}. Is there object number {i}?" for i in range(20))
    assert len(parse_rubric(text, max_questions=5)) == 5


def test_rule_rubric_covers_objects_colours_counts_relation():
    assert rule_rubric("a blue circle above a red square") == [
        "Is there a circle?", "Is the circle blue?", "Is there a square?", "Is the square red?",
        "Is the blue circle above the red square?"]
    assert rule_rubric("two green triangles") == [
        "Are there triangles?", "Are the triangles green?", "Are there exactly two green triangles?"]
    assert rule_rubric("A purple square to the left of a yellow circle.")[-1] == \
        "Is the purple square to the left of the yellow circle?"
    assert rule_rubric("a red circle and a yellow square") == [
        "Is there a circle?", "Is the circle red?", "Is there a square?", "Is the square yellow?"]
    assert rule_rubric("sunset over mountains") == [
        "Is there a sunset?", "Are there mountains?", "Is the sunset above the mountains?"]
    assert rule_rubric("an orange") == ["Does the image show an orange?"]  # nothing the rules read


def test_build_rubric_falls_back_to_rules():
    assert build_rubric("1. Is the circle blue?", "a blue circle") == (["Is the circle blue?"], "model")
    assert build_rubric("circle blue yes", "a blue circle") == (["Is there a circle?", "Is the circle blue?"], "rule")
    assert build_rubric(None, "a blue circle")[1] == "rule"
    assert '"a blue circle"' in rubric_request(" a blue circle ")


def test_yes_share_and_geometric_mean_by_hand():
    assert yes_share(0.6, 0.2) == pytest.approx(0.75)
    assert yes_share(0.0, 0.0) == 0.5
    assert geometric_mean([0.9, 0.4], 1e-4) == pytest.approx(0.6)  # sqrt(0.36)
    assert geometric_mean([0.8, 0.5, 0.2], 1e-4) == pytest.approx(0.08 ** (1 / 3))  # 0.4309
    assert geometric_mean([0.0, 1.0], 1e-4) == pytest.approx(0.01)  # floored: sqrt(1e-4 * 1)
    with pytest.raises(ValueError):
        geometric_mean([], 1e-4)


def test_meta_ttrl_rewards_rank_images():
    # image 0 passes everything fairly; image 1 fails one question badly; image 2 is unsure throughout
    s = [[0.9, 0.8, 0.7], [0.99, 0.99, 0.05], [0.5, 0.5, 0.5]]
    r = meta_ttrl_rewards(s)
    assert r == pytest.approx([(0.9 * 0.8 * 0.7) ** (1 / 3), (0.99 * 0.99 * 0.05) ** (1 / 3), 0.5])
    assert r[0] > r[2] > r[1]  # the geometric mean punishes one failed check more than the arithmetic mean would
    assert sum(s[1]) / 3 > sum(s[2]) / 3
    assert math.isclose(r[0], 0.7958, abs_tol=1e-4)


class _TableJudge:
    """Answers from a fixed table, and records the size of each forward pass."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def yes_probability(self, images, questions):
        self.calls.append(len(images))
        return [self.table[(i, q)] for i, q in zip(images, questions)]


@pytest.mark.parametrize("batch_size, calls", [(16, [6]), (4, [4, 2]), (1, [1] * 6)])
def test_rubric_scores_every_image_every_question_in_batches(batch_size, calls):
    table = {(i, q): 0.1 * (3 * i + k) for i in range(2) for k, q in enumerate("abc")}
    judge = _TableJudge(table)
    s = rubric_scores(judge, [0, 1], list("abc"), batch_size)
    assert s.shape == (2, 3) and judge.calls == calls
    assert s.ravel().tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])  # row = image, column = question


def test_registered_with_typed_params():
    spec = all_rewards()["meta_ttrl"]
    assert spec.needs == frozenset({"policy"})
    p = spec.params()
    assert (p.rubric, p.max_questions) == ("self", 8)
