"""Meta-TTRL rubrics: yes/no verification questions for a text-to-image prompt (METHODS.md, Meta-TTRL).

The model writes the rubric once per prompt (`rubric_request`); its output is messy (numbered or bulleted lists,
markdown, missing question marks, several questions on a line, duplicates, preambles), so `parse_rubric` keeps only
yes/no questions, cleaned and deduplicated. When nothing usable parses, `rule_rubric` builds one from the prompt
text alone (objects, colours, counts, one spatial relation), and `build_rubric` says which one was used, for the log.
Only the prompt text goes in: a scene's structured spec (for the checker) never reaches a rubric.
"""
from __future__ import annotations

import re

MAX_QUESTIONS = 8  # Meta-TTRL asks a handful of questions per prompt; more only repeats them at higher cost

RUBRIC_REQUEST = ("Write yes/no questions that check whether an image matches this description: \"{prompt}\". "
                  "Ask about each object, its colour, how many there are, and where objects are relative to each "
                  "other. Write one question per line.")

# auxiliaries that open a yes/no question ("What colour ...?" and "How many ...?" have no yes/no answer)
_AUX = ("is", "are", "does", "do", "did", "can", "could", "has", "have", "was", "were", "will", "would", "should",
        "shall", "must", "may")
_LIST_MARK = re.compile(r"^\s*(?:[-*+•·>]+|\(?\d{1,2}\s*[.):\]]|\(?[a-hA-H][.)](?=\s)|(?:q|question)\s*\d*\s*[:.)\-])\s*",
                        re.IGNORECASE)
_YESNO_NOTE = re.compile(r"\s*[(\[]\s*(?:yes\s*(?:/|or)\s*no|y\s*/\s*n)\s*[)\]]\s*", re.IGNORECASE)


def rubric_request(prompt: str) -> str:
    """The message asking the model for a rubric (its chat template is applied by the backend)."""
    return RUBRIC_REQUEST.format(prompt=prompt.strip())


def _clean(line: str) -> str:
    line = re.sub(r"[*_`#]+", "", line)  # markdown emphasis, code, headers
    prev = None
    while prev != line:  # "1. - Q1: ..." peels off one marker at a time
        prev, line = line, _LIST_MARK.sub("", line, count=1)
    line = _YESNO_NOTE.sub(" ", line)
    return re.sub(r"\s+", " ", line).strip().strip("\"'").strip()


def _as_question(text: str) -> str | None:
    """A cleaned yes/no question ending in '?', or None for anything else."""
    text = text.strip().rstrip(".:;!,").strip()
    words = text.split()
    if not 3 <= len(words) <= 30 or words[0].lower() not in _AUX:
        return None
    text = text.rstrip("?").rstrip() + "?"
    return text[0].upper() + text[1:]


def parse_rubric(text: str, max_questions: int = MAX_QUESTIONS) -> list[str]:
    """The yes/no questions in a model's rubric output, in order, without duplicates (case, spacing and
    punctuation ignored), at most `max_questions`."""
    out, seen = [], set()
    for raw in text.splitlines():
        line = _clean(raw)
        # several questions on one line; text after the last '?' is kept (a question missing its mark)
        for part in re.split(r"(?<=\?)\s*", line):
            q = _as_question(_clean(part))
            if q is None:
                continue
            key = re.sub(r"[^a-z0-9]+", " ", q.lower()).strip()
            if key not in seen:
                seen.add(key)
                out.append(q)
            if len(out) == max_questions:
                return out
    return out


# -- the rule-based fallback ---------------------------------------------------------------------------
COLOURS = ("red", "green", "blue", "yellow", "purple", "black", "white", "orange", "pink", "brown", "gray", "grey",
           "teal", "cyan", "magenta", "violet", "gold", "silver")
NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
# longest phrases first, so "to the left of" is found before "left of"
RELATION_WORDS = {"to the left of": "to the left of", "left of": "to the left of", "on the left of": "to the left of",
                  "to the right of": "to the right of", "right of": "to the right of",
                  "on the right of": "to the right of", "on top of": "above", "above": "above", "over": "above",
                  "below": "below", "under": "below", "beneath": "below", "underneath": "below",
                  "next to": "next to", "beside": "next to"}
_REL = re.compile(r"\b(" + "|".join(sorted(map(re.escape, RELATION_WORDS), key=len, reverse=True)) + r")\b")
_STOP = {"the", "and", "with", "of", "in", "on", "image", "picture", "photo", "showing", "there", "is", "are"}


def _singular(noun: str) -> str:
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith(("ches", "shes", "sses", "xes")):
        return noun[:-2]
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _object(phrase: str):
    """(count, colour, singular noun) of a noun phrase like "two red squares" (count 0: a bare plural), or None."""
    words = [w for w in re.findall(r"[a-z]+|\d+", phrase.lower())]
    count, colour, rest, stated = 1, None, [], False
    for w in words:
        if w in NUMBERS or w.isdigit():
            count, stated = (int(w) if w.isdigit() else NUMBERS[w]), True
        elif w in COLOURS:
            colour = "gray" if w == "grey" else w
        elif w not in _STOP:
            rest.append(w)
    if not rest:
        return None
    noun = rest[-1]
    if count == 1 and not stated and _singular(noun) != noun:
        return 0, colour, _singular(noun)  # a bare plural ("mountains"): some, count unknown
    return count, colour, (_singular(noun) if count != 1 else noun)


def _np(count: int, colour: str | None, noun: str, article: str) -> str:
    words = ([colour] if colour else []) + [noun if count == 1 else _plural(noun)]
    return f"{article} {' '.join(words)}" if article else " ".join(words)


def rule_rubric(prompt: str, max_questions: int = MAX_QUESTIONS) -> list[str]:
    """Questions built from the prompt text: per object its presence, colour and count, and one spatial
    relation between the first two objects. A prompt no rule reads gets one question about the whole prompt."""
    text = prompt.strip().rstrip(".")
    m = _REL.search(text.lower())
    relation = RELATION_WORDS[m.group(1)] if m else None
    sides = [text[:m.start()], text[m.end():]] if m else [text]
    phrases = [p for side in sides for p in re.split(r",|\band\b|\bwith\b", side, flags=re.IGNORECASE)]
    objects = [o for o in map(_object, phrases) if o is not None]
    questions = []
    for count, colour, noun in objects:
        if count == 1:
            questions.append(f"Is there {_np(1, None, noun, 'a' if noun[0] not in 'aeiou' else 'an')}?")
            if colour:
                questions.append(f"Is the {noun} {colour}?")
        else:
            questions.append(f"Are there {_np(count, None, noun, '')}?")
            if colour:
                questions.append(f"Are the {_plural(noun)} {colour}?")
            if count > 1:
                number = next((w for w, k in NUMBERS.items() if k == count and w not in ("a", "an", "single")),
                              str(count))
                questions.append(f"Are there exactly {number} {_np(count, colour, noun, '')}?")
    if relation and len(objects) >= 2:
        (c1, col1, n1), (c2, col2, n2) = objects[:2]
        subject = _np(c1, col1, n1, "the")
        verb = "Is" if c1 == 1 else "Are"  # c1 == 0 (a bare plural) reads as plural too
        questions.append(f"{verb} {subject} {relation} {_np(c2, col2, n2, 'the')}?")
    if not questions:
        questions = [f"Does the image show {text}?"]
    return list(dict.fromkeys(questions))[:max_questions]  # "a red square above a blue square" asks presence once


def build_rubric(model_output: str | None, prompt: str, max_questions: int = MAX_QUESTIONS) -> tuple[list[str], str]:
    """(questions, source): the model's parsed rubric ("model"), or the rule-based one ("rule") when the model
    wrote none or nothing parsed."""
    questions = parse_rubric(model_output or "", max_questions)
    if questions:
        return questions, "model"
    return rule_rubric(prompt, max_questions), "rule"
