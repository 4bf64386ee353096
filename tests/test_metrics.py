

def test_medoid_accuracy_scores_the_sample_closest_in_meaning_to_the_others():
    """Free text's maj@N: the medoid of each item's base samples under the bundled embedder, scored as answers are."""
    from types import SimpleNamespace

    from ttrl.protocols.transductive import medoid_accuracy

    sess = SimpleNamespace(trainer=SimpleNamespace(ctx=SimpleNamespace(state={})),
                           score=lambda answer, item: answer == item.answer)
    by_id = {"sky": SimpleNamespace(answer="the sky is blue"), "cat": SimpleNamespace(answer="cats drink milk"),
             "none": SimpleNamespace(answer=None)}
    votes = {"sky": {"id": "sky", "votes": ["the sky is blue", "bananas are yellow", "the sky is blue", None]},
             "cat": {"id": "cat", "votes": ["cats drink milk", "dogs bark at night", "dogs bark loudly at night"]},
             "none": {"id": "none", "votes": ["anything"]}}  # no reference: not counted
    assert medoid_accuracy(sess, votes, by_id) == 0.5
