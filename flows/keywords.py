"""Carrier opt-out keywords: STOP, START and HELP, in English and Spanish.

Why: US carriers and Twilio require that a message consisting of an opt-out
word stops all further texts, that START re-subscribes and that HELP answers
with who we are. Twilio already acts on its own keywords; the service still
classifies them so that its state (opted out, no check-ins queued) matches
what the carrier does, and so no flow can swallow them as answers.

Only the whole message counts: "stop texting me please" is not a keyword
(the service must still show it to staff). Case, surrounding whitespace,
punctuation and symbols are ignored ("Stop.", " stop!! ", "STOP 🛑"); letters
split by spaces are not joined (" s t o p" is not STOP), except "opt out",
accepted as OPTOUT. Pure: standard library only.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Final

__all__ = ["HELP_WORDS", "START_WORDS", "STOP_WORDS", "Keyword", "classify"]


class Keyword(StrEnum):
    """The kind of keyword a message is."""

    STOP = "STOP"
    START = "START"
    HELP = "HELP"


STOP_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
    | {"ALTO", "PARAR", "BAJA", "CANCELAR"}  # Spanish
)
# YES (SI) re-subscribes only a patient who is opted out (see `classify`).
START_WORDS: Final = frozenset({"START", "UNSTOP", "COMENZAR", "INICIO"})
HELP_WORDS: Final = frozenset({"HELP", "INFO", "AYUDA"})

_BY_WORD: Final[dict[str, Keyword]] = {
    **dict.fromkeys((w.casefold() for w in STOP_WORDS), Keyword.STOP),
    **dict.fromkeys((w.casefold() for w in START_WORDS), Keyword.START),
    **dict.fromkeys((w.casefold() for w in HELP_WORDS), Keyword.HELP),
}
_OPT_OUT: Final = re.compile(r"opt[\s\-_]*out")


def _is_edge(ch: str) -> bool:
    """Whitespace, punctuation, symbols (emoji) and controls may surround a keyword."""
    return unicodedata.category(ch)[0] in "ZPSC"


def classify(text: str, *, opted_out: bool = False) -> Keyword | None:
    """The keyword `text` is, or None when it is anything else.

    YES (or SÍ) counts as START only when `opted_out` is true: for a subscribed
    patient "yes" is an answer to a question, never a keyword.
    """
    core = unicodedata.normalize("NFKC", text).casefold()
    start, end = 0, len(core)
    while start < end and _is_edge(core[start]):
        start += 1
    while end > start and _is_edge(core[end - 1]):
        end -= 1
    core = core[start:end]
    keyword = _BY_WORD.get(core)
    if keyword is not None:
        return keyword
    if opted_out and core in ("yes", "si", "sí"):
        return Keyword.START
    if _OPT_OUT.fullmatch(core):
        return Keyword.STOP
    return None
