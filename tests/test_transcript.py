"""Transcript extractor (Whisper English normalisation) and the WER/CER metrics, by hand."""
import pytest

from ttrl.extractors import equivalence_classes, get_extractor
from ttrl.extractors.transcript import normalize_transcript
from ttrl.metrics import cer, wer


@pytest.mark.parametrize("raw, norm", [
    ("Unless to be rather cold-hearted and rather selfish is to be ill-disposed.",
     "unless to be rather cold hearted and rather selfish is to be ill disposed"),
    ("Ten of clubs.", "10 of clubs"),  # spelled numbers -> digits
    ("The colour of Mr. Smith's car!", "the color of mister smith is car"),  # spelling map, titles
    ("Hmm, uh, it is 2889.", "it is 2889"),  # fillers dropped
    ("[music] (laughs) okay", "okay"),  # bracketed annotations dropped
])
def test_whisper_english_normalisation(raw, norm):
    assert normalize_transcript(raw) == norm


def test_extractor_registered_and_empty_is_unparsable():
    ex = get_extractor("transcript")
    assert ex.name == "transcript"
    assert ex.extract("  He was NOT an ill-disposed young man. ") == "he was not an ill disposed young man"
    assert ex.extract("") is None and ex.extract("uh, um.") is None and ex.extract(None) is None


def test_votes_count_normalised_transcripts_as_one():
    ex = get_extractor("transcript")
    answers = [ex.extract(r) for r in ["Ten of clubs.", "10 of clubs", "ten of clubs!", "Tin of clubs", ""]]
    assert equivalence_classes(answers, ex) == [0, 0, 0, 1, None]


def test_wer_and_cer_by_hand():
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sat on mat", "hello there world"]
    # 1 deletion + 1 insertion over 6 + 2 reference words (corpus rate, not a mean of 1/6 and 1/2)
    assert wer(hyps, refs) == pytest.approx(2 / 8)
    assert wer([None], ["a b c"]) == 1.0  # no transcript: all deletions
    assert cer(["abd"], ["abc"]) == pytest.approx(1 / 3)
    assert cer(["ab c"], ["abc"]) == pytest.approx(1 / 3)  # an inserted space is a character
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        wer(["a", "b"], ["a"])
