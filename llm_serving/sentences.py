"""The sentence plan of an explanation: which sentences, the slots each must fill, and its check.

An explanation is a fixed sequence of sentences, one per group of facts:

    decision, [subject locked], per modality: distance [, fallback] [, canary arm],
    [missing modality], [fused distance], threshold, [client threshold]

Each sentence has *slots*: literal strings it must contain in order (the decision word, the
modality's name then its distance, ...). ``guide_regex`` turns the plan into a regular expression
for vLLM's structured outputs: the model chooses every word, the regex forces the slots in and
allows no other digit, so a number can only be the record's. ``check_sentence`` verifies one
sentence (its own slot rule plus the grounding claims); a sentence is streamed only after it
passes. ``check_complete`` verifies a whole text: the decision, every modality's distance
attributed to that modality, the fused distance when there are two modalities and the threshold.
Every sentence that passes its check makes the text pass ``check_complete`` by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm_serving.facts import CODE_BITS, fmt_number
from llm_serving.grounding import check_claims, stated_decision
from llm_serving.schemas import AuditFacts, ModalityFacts

_MODALITY_PATTERN = {"face": r"(?:face|facial)", "fingerprint": r"(?:fingerprints?|finger)"}
# The words the model writes between slots: lower-case words, commas, no digits, no sentence end.
_WORD = r"[A-Za-z,'-]+"  # unbounded length: a bounded one multiplies the grammar's states
_GAP_WORDS = 6
# Few words after the last slot: a small model tends to add a wrong clause ("so it matched") there.
_TAIL_WORDS = 3


@dataclass(frozen=True)
class Sentence:
    """One planned sentence: its topic, the slots it must contain, its rule and its template."""

    topic: str
    slots: tuple[str, ...]
    rule: re.Pattern[str] | None  # what the sentence must state (None: the slots are the rule)
    template: str
    fact: str  # the fact as the prompt gives it to the model (no digit but the slots')
    modality: str | None = None  # the sentence is about this modality only
    lead_words: int = 6  # words the model may write before the first slot


def _number(value: float) -> str:
    """A number as a whole token: 30 must not match inside 130 or 30.5."""
    return r"(?<![\w.])" + re.escape(fmt_number(value)) + r"(?![\w]|\.\d)"


def _near(word: str, value: float) -> re.Pattern[str]:
    """``word`` followed by ``value`` within the same clause (no digit, full stop or semicolon between)."""
    return re.compile(r"\b" + word + r"\b[^.;\d]{0,70}?" + _number(value), re.IGNORECASE)


def _relation(facts: AuditFacts) -> str:
    return "at or below" if facts.decision == "accept" else "above"


def _modality_sentences(m: ModalityFacts) -> list[Sentence]:
    name = m.modality
    out = [Sentence(
        f"distance:{name}", (name, fmt_number(m.distance)), _near(_MODALITY_PATTERN[name], m.distance),
        f"The {name} probe differed from the enrolled template in {m.distance} of {CODE_BITS} bits "
        f"(Hamming distance; model version {m.model_version}, {m.backend} {m.precision}, arm {m.arm}).",
        f"{name.capitalize()} Hamming distance: {m.distance}.", name,
        lead_words=1,  # "The face ...": a longer lead lets a small model start another sentence here
    )]
    if m.fallbacks:
        out.append(Sentence(
            f"fallback:{name}", (name, "fallback"), None,
            f"The {name} code was computed by a fallback backend after {', '.join(m.fallbacks)} failed.",
            f"The {name} code was computed by a fallback backend.", name, lead_words=1,
        ))
    if m.canary:
        out.append(Sentence(
            # The arm's name comes after a semicolon: a digit in it ("canary-3") must not read as the
            # number attributed to the modality.
            f"canary:{name}", (name, "canary"), None, f"The {name} code came from a canary arm; the arm is {m.arm}.",
            f"The {name} code came from a canary arm.", name, lead_words=1,
        ))
    return out


def plan(facts: AuditFacts) -> list[Sentence]:
    """The sentences an explanation of ``facts`` consists of, in order."""
    verdict = "accepted" if facts.decision == "accept" else "rejected"
    sentences = [Sentence("decision", (verdict,), None, f"Verification {verdict}.", f"Decision: {verdict}.")]
    if facts.kind == "subject_locked":
        sentences.append(Sentence(
            "locked", ("locked",), None,
            "The subject was locked after repeated rejections, so no biometric was compared.",
            "The subject is locked after repeated rejects; nothing was compared.",
        ))
        return sentences
    assert facts.fused_distance is not None  # AuditFacts guarantees it for a verification
    for m in facts.modalities:
        sentences += _modality_sentences(m)
    for name in facts.missing_modalities:
        sentences.append(Sentence(f"missing:{name}", (name, "not"), None, f"The {name} was not compared.",
                                  f"The {name} was not compared.", name, lead_words=1))
    fused = fmt_number(facts.fused_distance)
    if len(facts.modalities) > 1:
        sentences.append(Sentence(
            "fused", ("fused", fused), _near(r"(?:fused|fusion|combined|average|mean)", facts.fused_distance),
            f"The fused distance (mean of the modalities) is {fused}.", f"Fused distance (mean of both): {fused}.",
        ))
    outcome = "matched" if facts.decision == "accept" else "did not match"
    subject = "fused distance" if len(facts.modalities) > 1 else "distance"
    sentences.append(Sentence(
        "threshold", (_relation(facts), "threshold", fmt_number(facts.threshold)), _near("threshold", facts.threshold),
        f"The {subject} {fused} is {_relation(facts)} the threshold {fmt_number(facts.threshold)}, "
        f"so the probe {outcome} the enrolled template.",
        f"The {subject} is {_relation(facts)} the threshold of {fmt_number(facts.threshold)}.",
    ))
    if facts.threshold_source == "client":
        sentences.append(Sentence(
            "override", ("threshold", "client"), None,
            "The threshold was set by the client instead of the router's default.",
            "The client set the threshold (not the default).",
        ))
    return sentences


def template_text(facts: AuditFacts) -> str:
    """The fallback explanation: every fact of the record, worded without a model."""
    return " ".join(s.template for s in plan(facts))


def _sentence_regex(sentence: Sentence) -> str:
    parts = ["[A-Z][a-z]+"]
    for i, slot in enumerate(sentence.slots):
        words = min(sentence.lead_words, _GAP_WORDS) if i == 0 else _GAP_WORDS
        parts += [f",?( {_WORD}){{0,{words}}}", " ", re.escape(slot)]
    parts += [f",?( {_WORD}){{0,{_TAIL_WORDS}}}", r"\."]
    return "".join(parts)


def guide_regex(sentences: list[Sentence]) -> str:
    """The regex a generation of ``sentences`` must match: slot order forced, no other digits."""
    return " ".join(_sentence_regex(s) for s in sentences)


def _has_slots(sentence: Sentence, text: str) -> str | None:
    """None when ``text`` holds the sentence's slots as whole words, in order."""
    pos = 0
    for slot in sentence.slots:
        found = re.compile(r"(?<![\w.])" + re.escape(slot) + r"(?![\w]|\.\d)", re.IGNORECASE).search(text, pos)
        if found is None:
            return f"lacks {slot!r}"
        pos = found.end()
    return None


def check_sentence(sentence: Sentence, text: str, facts: AuditFacts) -> str | None:
    """Why ``text`` may not stand as ``sentence`` of the explanation of ``facts``, or None."""
    problem = _has_slots(sentence, text)
    if problem is None and sentence.rule is not None and not sentence.rule.search(text):
        problem = "does not attribute the number to its subject"
    if problem is None and sentence.topic == "decision":
        says_accept, says_reject = stated_decision(text)
        if (says_accept, says_reject) != (facts.decision == "accept", facts.decision == "reject"):
            problem = f"does not state the decision {facts.decision} alone"
    if problem is None:
        problem = check_claims(text, facts)
    if problem is None:
        problem = _unfounded_kind(text, facts)
    if problem is None and sentence.modality is not None:
        others = [n for n in _MODALITY_PATTERN if n != sentence.modality]
        if any(re.search(r"\b" + _MODALITY_PATTERN[n] + r"\b", text, re.IGNORECASE) for n in others):
            problem = f"names another modality in the {sentence.modality} sentence"
    return None if problem is None else f"{sentence.topic} sentence {problem}"


def _kind_words(facts: AuditFacts) -> dict[str, bool]:
    """The words that claim a decision kind, and whether the record is of that kind."""
    return {
        "canary": any(m.canary for m in facts.modalities),
        "fallback": any(m.fallbacks for m in facts.modalities),
        "client": facts.threshold_source == "client",
        "locked": facts.kind == "subject_locked",
    }


def _unfounded_kind(text: str, facts: AuditFacts) -> str | None:
    """A decision kind the text claims and the record does not have (a small model copies them)."""
    for word, holds in _kind_words(facts).items():
        if not holds and re.search(r"\b" + word + r"\b", text, re.IGNORECASE):
            return f"claims {word!r}, which the record does not hold"
    return None


def check_complete(text: str, facts: AuditFacts) -> str | None:
    """Why a whole explanation is incomplete or ungrounded, or None when it may be delivered."""
    says_accept, says_reject = stated_decision(text)
    if (says_accept, says_reject) != (facts.decision == "accept", facts.decision == "reject"):
        return f"does not state the decision {facts.decision} alone"
    for sentence in plan(facts):
        if sentence.rule is not None and not sentence.rule.search(text):
            return f"lacks the {sentence.topic} attributed to its subject"
        if sentence.rule is None and _has_slots(sentence, text) is not None:
            return f"lacks the {sentence.topic}"
    return check_claims(text, facts) or _unfounded_kind(text, facts)


def split_sentences(buffer: str, *, final: bool) -> tuple[list[str], str]:
    """Complete sentences in ``buffer`` and the unfinished rest.

    A sentence ends at a full stop followed by a space (``40.5`` is no end); at the end of the
    generation (``final``) the rest is the last sentence.
    """
    out: list[str] = []
    start = 0
    for match in re.finditer(r"\.(?=\s)", buffer):
        piece = buffer[start:match.end()].strip()
        if piece:
            out.append(piece)
        start = match.end()
    rest = buffer[start:]
    if final and rest.strip():
        out.append(rest.strip())
        rest = ""
    return out, rest
