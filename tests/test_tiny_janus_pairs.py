"""The understanding stage's minimal pairs: each question is asked of two drawings with opposite answers, so the
question text alone predicts nothing (with questions_for's single questions it predicted 68%)."""

from ttrl.rubric import rule_rubric
from ttrl.tasks.scenes import split
from ttrl.zoo.tiny_janus_train import paired_questions, scenes


def test_pairs_share_the_question_and_split_the_answer():
    pairs = scenes(split("train"), 40, seed=3, size=32)
    triples = paired_questions(pairs, seed=4, size=32)
    assert len(triples) == 80
    for (spec, im), (a, q, yes), (b, q2, yes2) in zip(pairs, triples[::2], triples[1::2]):
        assert a is im and b is not im and b.size == (32, 32)
        assert q == q2 and yes != yes2
        assert yes == (q in rule_rubric(spec.prompt()))  # the true scene's rubric holds on its own drawing
    assert sum(yes for _, _, yes in triples) == 40
    assert paired_questions(pairs, seed=4, size=32)[5][1] == triples[5][1]  # same seed, same questions
