"""Crisis-language detector and the immediate crisis reply.

Why: every inbound SMS, in any state of any flow, passes through `detect`. A
match raises a critical escalation and the patient is answered at once with
crisis resources (`crisis_reply`). No flow can switch this off (see
docs/safety.md).

Design: the text is normalized (casefold, accents stripped, texting forms
expanded, repeated letters squeezed) into words; each lexicon row is a small
compiled regex tried only where the message has one of the row's lead words,
which keeps the check to a few microseconds on ordinary answers. A match is
dropped only when a negator shortly before it, in the same clause, negates it
("I'm not suicidal"); a bare "no" answer followed by a new clause does not
("no, I want to die"). Recall is favoured: a false alarm costs a clinician a minute, a miss can cost a life.

`CrisisMatch.phrase` is the lexicon entry id, never the patient's words, so it
is safe for logs and escalation summaries. Pure: standard library only.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from flows import crisis_concepts, crisis_model, crisis_rules
from flows.crisis_features import Scorer
from flows.gsm import GSM7_BASIC
from flows.text import PAGE_AFTER_MINUTES, high_followup

__all__ = [
    "CRISIS_REPLY_MAX_SEPTETS",
    "LEXICON",
    "CrisisCategory",
    "CrisisMatch",
    "LexiconEntry",
    "Tier",
    "crisis_reply",
    "detect",
    "detect_rules",
    "model_score",
    "normalize",
    "reply_for",
]


class CrisisCategory(StrEnum):
    """What kind of crisis matched."""

    SUICIDAL = "suicidal"
    SELF_HARM = "self_harm"
    OVERDOSE = "overdose"
    HARM_TO_OTHERS = "harm_to_others"
    MEDICAL_EMERGENCY = "medical_emergency"
    PSYCHOSIS_COMMAND = "psychosis_command"


class Tier(StrEnum):
    """Critical: explicit, present danger (answered with 988/911 at once). High: softer
    signs a clinician must see today (answered with a call-back and 988)."""

    CRITICAL = "critical"
    HIGH = "high"


# When one message matches several categories, the first here is reported.
_PRIORITY: Final = (
    CrisisCategory.SUICIDAL,
    CrisisCategory.HARM_TO_OTHERS,
    CrisisCategory.OVERDOSE,
    CrisisCategory.PSYCHOSIS_COMMAND,
    CrisisCategory.SELF_HARM,
    CrisisCategory.MEDICAL_EMERGENCY,
)


@dataclass(frozen=True, slots=True)
class CrisisMatch:
    """A detected crisis. `phrase` names the rule (or "model"): no PHI, safe to log."""

    category: CrisisCategory
    phrase: str
    tier: Tier = Tier.CRITICAL


# ---------------------------------------------------------------- normalization

_SQUEEZE: Final = re.compile(r"([a-z])\1+")


def _sq(word: str) -> str:
    """Squeeze runs of a repeated letter to one, as `normalize` does."""
    return _SQUEEZE.sub(r"\1", word)


# regexes, not str.translate with a dict, which walks the text a character at a time
_ZERO_WIDTH: Final = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_QUOTES: Final = re.compile("[\u2019\u2018\u02bc\u00b4]")
_NON_ASCII_SYMBOL: Final = re.compile(r"[^\w\s\x00-\x7f]")  # emoji, dashes, ¿¡..
_OD_PAST: Final = re.compile(r"\bod(?:['`]e?d|ed)\b")  # od'd, oded, od'ed; never "odd"
_OD: Final = re.compile(r"\bod\b")
_GLUED_MYSELF: Final = re.compile(r"\B(myself|myslef|myslf|mself)\b")
_CLAUSE_CHARS: Final = '.,;:!?()[]{}"\n\r'
_SPACE_CHARS: Final = "#$%&*+-/<=>@\\^_`~\t\f\v"
# Clause punctuation -> "|", other ASCII symbols -> space, apostrophes dropped.
_ASCII_TABLE: Final = bytes.maketrans(
    (_CLAUSE_CHARS + _SPACE_CHARS).encode(),
    b"|" * len(_CLAUSE_CHARS) + b" " * len(_SPACE_CHARS),
)
_STR_TABLE: Final = str.maketrans(
    {**dict.fromkeys(_CLAUSE_CHARS, "|"), **dict.fromkeys(_SPACE_CHARS, " "), "'": None}
)

# Texting forms (keys and values squeezed below, as the text is).
_RAW_EXPANSIONS: Final[dict[str, str]] = {
    "wanna": "want to",
    "gonna": "going to",
    "gotta": "got to",
    "kms": "kill myself",
    "kmys": "kill myself",
    "ded": "dead",
    "cannot": "cant",
    "myslef": "myself",
    "myslf": "myself",
    "mself": "myself",
    "meself": "myself",
    "lyf": "life",
    "lyfe": "life",
    "u": "you",
    "ur": "your",
    "tho": "though",
    "selfharm": "self harm",
    "selfharming": "self harming",
    "but": "|",
}
_RAW_BIGRAMS: Final[dict[str, str]] = {
    "can not": "cant",
    "do not": "dont",
    "does not": "doesnt",
    "did not": "didnt",
    "will not": "wont",
    "is not": "isnt",
    "was not": "wasnt",
    "would not": "wouldnt",
    "have not": "havent",
    "my self": "myself",
    "want 2": "want to",
    "going 2": "going to",
    "ready 2": "ready to",
}
_EXPANSIONS: Final = {_sq(k): _sq(v) for k, v in _RAW_EXPANSIONS.items()}
_BIGRAMS: Final = {f" {_sq(k)} ": f" {_sq(v)} " for k, v in _RAW_BIGRAMS.items()}


_WORD_CACHE: Final[dict[str, str]] = {}
_WORD_CACHE_MAX: Final = 20_000


def _word(word: str) -> str:
    """One word, squeezed and expanded. Memoized: SMS vocabulary is small."""
    squeezed = _SQUEEZE.sub(r"\1", word)
    result = _EXPANSIONS.get(squeezed, squeezed)
    if len(_WORD_CACHE) >= _WORD_CACHE_MAX:
        _WORD_CACHE.clear()
    _WORD_CACHE[word] = result
    return result


# The combining marks NFKD splits off Latin letters ("í" -> "i" + U+0301); one regex pass
# instead of a Python loop over every character.
_COMBINING: Final = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
)


def _strip_accents(text: str) -> str:
    return _COMBINING.sub("", unicodedata.normalize("NFKD", _ZERO_WIDTH.sub("", text)))


def normalize(text: str) -> str:
    """Reduce an SMS to the form the lexicon is written for: space-separated words.

    Casefold; strip accents and zero-width characters; "od'd"/"oded" ->
    "overdosed" and "od" -> "overdose" (before squeezing, so "odd" stays
    apart); drop apostrophes ("don't" -> "dont"); clause punctuation and "but"
    become a "|" word, which a negation never reaches across; other symbols
    become spaces; runs of a repeated letter are squeezed ("diiie" -> "die",
    "kill" -> "kil"); texting forms are expanded ("wanna" -> "want to", "kms"
    -> "kil myself", "do not" -> "dont").
    """
    text = text.casefold()
    if not text.isascii():
        text = _QUOTES.sub("'", _strip_accents(text))
        text = _NON_ASCII_SYMBOL.sub(" ", text)
    if "od" in text:
        text = _OD_PAST.sub(" overdosed ", text)
        text = _OD.sub("overdose", text)
    if text.isascii():
        text = text.encode("ascii").translate(_ASCII_TABLE, b"'").decode("ascii")
    else:
        text = text.translate(_STR_TABLE)
    text = text.replace("|", " | ")
    if "self" in text:
        text = _GLUED_MYSELF.sub(r" \1", text)
    cache = _WORD_CACHE
    out = " " + " ".join([cache.get(w) or _word(w) for w in text.split()]) + " "
    for pair, joined in _BIGRAMS.items():
        if pair in out:
            out = out.replace(pair, joined)
    return out.strip()


# ---------------------------------------------------------------------- lexicon


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    """One lexicon row: a crisis phrase starting with one of `leads`.

    `leads` are whole words (space-separated) the phrase must start with;
    `tail` is a regex for the rest, matched right after the lead (start it
    with a space). Both are written in normal spelling over normalized text;
    doubled letters are squeezed when compiled, as in the text. Several rows
    may share an `id`; the id is what `CrisisMatch.phrase` reports.
    """

    id: str
    category: CrisisCategory
    leads: str
    tail: str = ""


_S = CrisisCategory.SUICIDAL
_H = CrisisCategory.SELF_HARM
_O = CrisisCategory.OVERDOSE
_M = CrisisCategory.MEDICAL_EMERGENCY


def _variants(*parts: tuple[str, ...]) -> str:
    """All concatenations of one choice per part, as a `leads` string."""
    words = [""]
    for choices in parts:
        words = [w + c for w in words for c in choices]
    return " ".join(sorted(set(words)))


# suicide, suicidal and misspellings: suacide, sucide, suicde, suiside, suicidio..
_SUICIDE_WORDS: Final = _variants(
    ("su",),
    ("i", "a", "ie", "ia", "e", "ui", ""),
    ("c", "s", "sc"),
    ("i", ""),
    ("d",),
    ("e", "es", "al", "ial", "ally", "ality", "le", "ed", "ing", "io", "a", "arme", "arse"),
)
_OVERDOSE_WORDS: Final = _variants(
    ("over",), ("dos", "doss", "doz"), ("e", "ed", "es", "ing", "d", "ses", "sed", "sing")
)

_PILLS: Final = (
    r"(?:pills?|meds|medications?|medicines?|tablets?|capsules?|prescriptions?|scripts?"
    r"|bottle|pack|packet|xanax|klonopin|ativan|valium|benzos|ambien|seroquel|lithium"
    r"|tylenol|advil|ibuprofen|oxy|oxys|percs|opioids|painkillers|ketamine|spravato"
    r"|nasal spray|antidepressants|sleeping pills|supply|stash|pastillas)"
)
_PERSON: Final = (
    r"(?:him|her|them|my (?:husband|wife|partner|son|daughter|mom|mother|dad|father|friend"
    r"|boyfriend|girlfriend|roommate|brother|sister|kid|child))"
)
_NOT_ACCIDENT: Final = (
    r"(?! (?:at the gym|at work|lifting|playing|running|working out|exercising|cooking"
    r"|on the|on a|in the kitchen|by accident|accidentally|while|shaving|skiing|falling))"
)
_NOT_DIE_IDIOM: Final = (
    r"\b(?! (?:laughing|of laughter|of embarrassment|of shame|of boredom|of curiosity"
    r"|for (?:a|an|some|this|that|one)))"
)
_WANT_VERBS: Final = (
    "want wants wanted wanting wish wished wishing ready plan planning going deserve hope"
    " hoping need trying tried try"
)
_DONT_WANT_TAIL: Final = (
    r" want(?:s|ed)? to (?:live|be alive|exist|wake up|go on|keep going|keep living"
    r"|be here anymore|be around anymore|be on this earth|see tomorrow)"
)

L = LexiconEntry
LEXICON: Final[tuple[LexiconEntry, ...]] = (
    # ------------------------------------------------------------ suicidal
    L("suicide_word", _S, _SUICIDE_WORDS, r"(?! squad)"),
    L("kill_myself", _S, "kill kills killed killing killin", r" myself"),
    L("unalive", _S, "unalive unalived unaliving"),
    L("end_my_life", _S, "end ends ended ending take takes taking took", r" my (?:own )?life"),
    L("end_it_all", _S, "end ends ended ending", r" (?:it all|everything|my suffering)"),
    L(
        "end_it",
        _S,
        "want wanting going ready plan planning about think thinking thought just should might",
        r"(?: to| about| of)? end(?:ing)? (?:it|things)\b(?! (?:with|for|between|off|up|here"
        r"|there|on|early|at|by|the|so|after|before))",
    ),
    L(
        "want_it_to_end",
        _S,
        "want wanted",
        r" (?:it all|everything|all of it|all of this|my life) to (?:end|be over|stop)"
        r"| (?:it|this) to (?:end|be over)",
    ),
    L("want_to_die", _S, _WANT_VERBS, r"(?: to)? die" + _NOT_DIE_IDIOM),
    L(
        "wish_to_die",
        _S,
        "wish hope pray praying",
        r" i (?:could |would |just |could just |would just )?die" + _NOT_DIE_IDIOM,
    ),
    L("wish_to_die", _S, "should", r" (?:just )?die" + _NOT_DIE_IDIOM),
    L("wish_to_die", _S, "might may", r" as well (?:just )?die" + _NOT_DIE_IDIOM),
    L("wish_dead", _S, "wish wished wishing", r" (?:i )?(?:was|were|could be|would be|to be) dead"),
    L("wish_dead", _S, "rather", r" be dead| (?:just )?die\b(?! than)"),
    L("wish_dead", _S, "want ready", r" to be dead"),
    L("wish_dead", _S, "better", r" off dead"),
    L(
        "wish_not_born",
        _S,
        "wish wished",
        r" i (?:was never born|were never born|had never been born|wasnt born|wasnt alive"
        r"|wasnt here|didnt exist|could disappear forever|was gone|were gone|could sleep forever"
        r"|could go to sleep and (?:not|never) wake up|could never wake up)",
    ),
    L(
        "not_wake_up",
        _S,
        "hope wish pray praying hoping",
        r" (?:that )?i (?:dont|never|wont) wake up",
    ),
    L(
        "not_wake_up",
        _S,
        "want",
        r" to (?:go to sleep and |sleep and )?never wake up"
        r"| to (?:sleep|go to sleep) (?:forever|and not wake up)",
    ),
    L(
        "dont_want_to_live",
        _S,
        "dont didnt doesnt",
        _DONT_WANT_TAIL + r"| feel like (?:living|being alive|existing)",
    ),
    L("dont_want_to_live", _S, "no", r" longer" + _DONT_WANT_TAIL),
    L(
        "dont_want_to_live",
        _S,
        "dont",
        r" (?:think|know if|feel like) i (?:want to|can) (?:live|be alive|keep living|go on"
        r"|keep going)",
    ),
    L(
        "dont_want_to_live",
        _S,
        "not",
        r" sure (?:if |that )?i (?:want to|can) (?:live|be alive|keep living|go on|keep going)",
    ),
    L(
        "no_reason_to_live",
        _S,
        "no",
        r" (?:reason|desire|will|wish) to (?:live|keep living|go on|be alive)"
        r"| point (?:in |to )?(?:living|being alive|going on|life)",
    ),
    L("no_reason_to_live", _S, "nothing", r" (?:left )?to live for"),
    L(
        "no_reason_to_live",
        _S,
        "whats",
        r" the point (?:of|in) (?:living|being alive|going on|life)",
    ),
    L("no_reason_to_live", _S, "tired sick", r" of (?:living|being alive)"),
    L("no_reason_to_live", _S, "done", r" with (?:life|living)"),
    L("no_reason_to_live", _S, "life it", r" (?:isnt|aint) worth living"),
    L("no_reason_to_live", _S, "not", r" worth living"),
    L(
        "no_reason_to_live",
        _S,
        "cant",
        r" (?:go on|keep going|live like this)(?: anymore| any longer| like this)",
    ),
    L("better_off_without_me", _S, "better happier", r"(?: off)? without me"),
    L(
        "better_off_without_me",
        _S,
        "nobody noone",
        r" (?:would|will|is going to) (?:miss me|care if i (?:died|was gone|were gone|disappeared))",
    ),
    L("better_off_without_me", _S, "no", r" one (?:would|will) (?:miss me|care if i died)"),
    L(
        "stockpiling",
        _S,
        "stockpiling stockpiled hoarding hoarded saving saved",
        r"(?: up)? (?:my |all my |all of my )?(?:\w+ )?" + _PILLS,
    ),
    L("hang_myself", _S, "hang hangs hanged hanging hung", r" myself"),
    L(
        "hang_myself",
        _S,
        "make made making tie tied tying have got bought",
        r" a (?:noose|rope to hang)",
    ),
    L(
        "jump_off",
        _S,
        "jump jumps jumped jumping",
        r" (?:off|from|of|out of|out) (?:a |the |my |this |that )?(?:\w+ )?(?:bridge|building"
        r"|roof|rooftop|cliff|balcony|overpass|window|train|bus|truck|parking garage|tower|ledge)"
        r"| in front of (?:a|the) (?:train|bus|truck|car)",
    ),
    L(
        "jump_off",
        _S,
        "step stepping walk walking throw throwing",
        r"(?: myself)? in front of (?:a|the) (?:train|bus|truck|car)| into traffic",
    ),
    L("jump_off", _S, "crash crashing", r" my car on purpose"),
    L(
        "jump_off",
        _S,
        "drive driving",
        r" (?:my car )?(?:off|into) (?:a|the) (?:bridge|cliff|wall|tree|river|lake)",
    ),
    L("other_method", _S, "shoot shot shooting", r" myself"),
    L("other_method", _S, "blow blew blowing", r" my brains out"),
    L("other_method", _S, "gun", r" to my head"),
    L("other_method", _S, "bullet", r" (?:in|through) my (?:head|brain)"),
    L(
        "other_method",
        _S,
        "drown drowned drowning poison poisoned poisoning gas gassing strangle strangling"
        " suffocate suffocating electrocute",
        r" myself",
    ),
    L(
        "slit_wrists",
        _S,
        "slit slits slitting slash slashed slashing open opened opening",
        r" (?:my |both )?wrists?",
    ),
    L("goodbye", _S, "this", r" is (?:my )?(?:goodbye|the end|my last (?:message|text))"),
    L("goodbye", _S, "goodbye", r" forever"),
    L("goodbye", _S, "said saying", r" my goodbyes"),
    L(
        "goodbye",
        _S,
        "wont",
        r" be (?:alive|around much longer|around anymore|around tomorrow)",
    ),
    L(
        "goodbye",
        _S,
        "wrote writing write written left leaving",
        r" (?:a |my |some )?(?:goodbye|farewell|last) (?:note|notes|letter|letters)",
    ),
    L(
        "giving_away",
        _S,
        "gave giving give given",
        r" away (?:all )?(?:of )?(?:my )?(?:things|stuff|belongings|possessions|everything i own)",
    ),
    L("ctb", _S, "ctb"),
    L("spanish_suicidal", _S, "quiero quisiera", r" morir(?:me)?| matarme"),
    L("spanish_suicidal", _S, "me", r" quiero (?:morir|matar)(?:me)?| voy a (?:matar|morir)"),
    L("spanish_suicidal", _S, "ganas", r" de morir(?:me)?"),
    L("spanish_suicidal", _S, "voy", r" a matarme"),
    L("spanish_suicidal", _S, "matarme"),
    L("spanish_suicidal", _S, "quitarme", r" la vida"),
    L("spanish_suicidal", _S, "no", r" quiero (?:seguir )?vivir"),
    L("spanish_suicidal", _S, "desearia", r" estar muert[oa]"),
    # ------------------------------------------------------------ overdose
    L("overdose", _O, _OVERDOSE_WORDS + " overdosis sobredosis"),
    L("overdose", _O, "over", r" dos(?:e|ed|es|ing)"),
    L("overdose", _O, "overdoes", r"\b(?! it)"),
    L(
        "took_all_pills",
        _O,
        "took take taken taking swallowed swallow swallowing ate downed popped chugged",
        r"(?: \w+){0,2}? (?:all|all of|the whole|a whole|my whole|the entire|my entire|every"
        r"|a bunch of|a handful of|handful of|a lot of|lots of|a ton of|the rest of)"
        r" (?:my |the |his |her |those |these |of )?(?:\w+ )?" + _PILLS + r"\b"
        r"(?! (?:on time|as prescribed|as directed|like i was supposed to|like im supposed to"
        r"|every day|each day|this morning|for the day|for the week|for today|today|yesterday"
        r"|last night as usual))",
    ),
    L(
        "too_many_pills",
        _O,
        "took take taken taking swallowed had",
        r" (?:way )?too (?:many|much) (?:of )?(?:my |the |his |her )?(?:\w+ )?" + _PILLS,
    ),
    L("too_many_pills", _O, "took", r" more than (?:i was supposed to|im supposed to|prescribed)"),
    L(
        "pill_count",
        _O,
        "took swallowed taken popped ate",
        r" (?:like |about |around |over |maybe )?(?:[1-9]\d+|twenty|thirty|forty|fifty|sixty"
        r"|a hundred|hundred|dozens of|a dozen) (?:of )?(?:my |the )?(?:\w+ )?" + _PILLS,
    ),
    L("spanish_overdose", _O, "tome", r" todas (?:mis |las )?pastillas"),
    # ------------------------------------------------------------ self-harm
    L(
        "self_harm",
        _H,
        "self",
        r" (?:harm|harms|harming|harmed|injury|injuring|injure|injured|hurt|hurting"
        r"|mutilation|mutilating|mutilate)",
    ),
    L("self_harm", _H, "urge urges", r" to (?:sh|cut|self harm)"),
    L("self_harm", _H, "relapsed", r" (?:on|with) (?:sh|cutting|self harm)"),
    L("self_harm", _H, "sh", r" (?:urges|relapse)"),
    L(
        "hurt_myself",
        _H,
        "hurt hurts hurting harm harms harming harmed injure injuring punish punishing burn"
        " burning hit hitting scratch scratching bite biting bruise bruising mutilate"
        " mutilating mutilated",
        r" myself\b" + _NOT_ACCIDENT,
    ),
    L(
        "cut_myself",
        _H,
        "cut cuts cutting slice slicing sliced carve carving carved",
        r" (?:myself|my (?:arms?|legs?|thighs?|wrists?|skin|stomach|body))\b"
        r"(?! (?:shaving|cooking|on|by accident|accidentally|open on|while))",
    ),
    L("cutting_again", _H, "cutting", r" again"),
    L(
        "cutting_again",
        _H,
        "started been relapsed want wanting urge going keep",
        r"(?: and| to)? cutting\b(?! (?:back|down|out|off|up|costs|corners|class|school|the"
        r"|my hair|hair|it|carbs|sugar|ties|in|onions|wood|paper|grass|coupons))",
    ),
    L("spanish_self_harm", _H, "cortarme", r"\b(?! (?:el pelo|el cabello|las unas|el fleco))"),
    L("spanish_self_harm", _H, "hacerme", r" dano"),
    L("spanish_self_harm", _H, "lastimarme autolesion autolesiones autolesionarme"),
    L("spanish_self_harm", _H, "corte", r" (?:los brazos|las venas|las piernas|otra vez)"),
    # ------------------------------------------------------------ medical emergency
    L(
        "cant_breathe",
        _M,
        "cant couldnt hard struggling hardly trouble difficulty problems unable",
        r"(?: to| time)? (?:breathe|breathing|breath|catch (?:my|his|her) breath|get air)\b"
        r"(?! (?:through|out of))",
    ),
    L("cant_breathe", _M, "short shortness", r" of breath"),
    L("cant_breathe", _M, "gasping", r" for (?:air|breath)"),
    L("cant_breathe", _M, "no", r" puedo respirar"),
    L("not_breathing", _M, "not isnt stopped wasnt arent barely", r" breathing"),
    L("not_breathing", _M, "no", r" longer breathing"),
    L(
        "cant_wake",
        _M,
        "cant couldnt unable",
        r"(?: to)? (?:wake|rouse|get) " + _PERSON + r" up",
    ),
    L(
        "cant_wake",
        _M,
        "he she they hes shes theyre",
        r" (?:wont|isnt|doesnt|didnt) (?:wake|waking) up",
    ),
    L("cant_wake", _M, "unresponsive unconscious"),
    L("cant_wake", _M, "no", r" responde"),
    L(
        "chest_pain",
        _M,
        "chest",
        r" (?:pain|pains|hurts|is hurting|hurting|tightness|tight|pressure|is tight"
        r"|feels tight|feels heavy|discomfort)",
    ),
    L("chest_pain", _M, "pain pressure tightness squeezing", r" in (?:my|his|her|the) chest"),
    L("chest_pain", _M, "crushing", r" (?:chest|pain|feeling|pressure)"),
    L("chest_pain", _M, "heart", r" attack"),
    L("chest_pain", _M, "dolor presion", r" en el pecho"),
    L(
        "heart_racing_pain",
        _M,
        "heart",
        r" (?:is )?(?:racing|pounding|beating (?:so )?fast)(?: \w+){0,5}? (?:pain|hurts|hurting)",
    ),
    L("heart_racing_pain", _M, "pain hurts", r"(?: \w+){0,5}? heart (?:is )?(?:racing|pounding)"),
    L(
        "fainting",
        _M,
        "pass passes passed passing",
        r" out\b(?! (?:flyers|candy|papers|samples|cards|the))",
    ),
    L("fainting", _M, "fainted fainting desmaye desmayo"),
    L("fainting", _M, "going about might", r"(?: to)? faint"),
    L("fainting", _M, "blacked blacking", r" out"),
    L("fainting", _M, "lost losing", r" consciousness"),
    L("seizure", _M, "seizure seizures seizing convulsing convulsion convulsions convulsed"),
    L("seizure", _M, "having", r" a fit"),
    L(
        "worst_headache",
        _M,
        "worst",
        r" headache (?:of (?:my|his|her) life|ever|ive ever had|i have ever had|in my life)",
    ),
    L("worst_headache", _M, "thunderclap", r" headache"),
    L(
        "worst_headache",
        _M,
        "sudden",
        r" (?:severe|terrible|horrible|excruciating|blinding) headache",
    ),
    L(
        "stroke",
        _M,
        "stroke",
        r"(?<!heat stroke)(?<!sun stroke)(?<!back stroke)(?<!brush stroke)(?<!breast stroke)"
        r"\b(?! of)",
    ),
    L("stroke", _M, "face", r" (?:is )?(?:drooping|droopy|droops|drooped|going numb)"),
    L("stroke", _M, "drooping", r" (?:face|mouth|on one side)"),
    L("stroke", _M, "slurred slurring", r" (?:speech|words|my words|his words|her words)"),
    L("stroke", _M, "speech words", r" (?:is |are )?slurred"),
    L("stroke", _M, "numb", r" on one side"),
    L(
        "stroke",
        _M,
        "cant",
        r" (?:move|feel|lift) (?:my|his|her) (?:left |right )?(?:arm|leg|side|face)",
    ),
    L(
        "took_too_much",
        _M,
        "took",
        r" (?:way )?too much\b(?! (?:time|of (?:my|your|the) time|sun|coffee|caffeine|off|on"
        r"|to|for|in|with|at|from|out|advantage|of a|work))",
    ),
    L(
        "emergency_help",
        _M,
        "call called calling need needs get getting send sent",
        r" (?:an? )?(?:911|ambulance|paramedics|ems)",
    ),
    L("emergency_help", _M, "ambulance ambulancia 911"),
    L("emergency_help", _M, "er", r"(?<=(?:at|in|to) the er)"),
    L("emergency_help", _M, "emergency", r"(?<=(?:at|in|to) the emergency) (?:room|department)"),
    L("allergic_reaction", _M, "throat", r" (?:is )?(?:closing|swelling|closing up)"),
    L("allergic_reaction", _M, "lips tongue", r" (?:is |are )?(?:swelling|swollen)"),
    L("allergic_reaction", _M, "anaphylaxis anaphylactic"),
    L("turning_blue", _M, "lips face skin fingers", r" (?:are |is )?(?:turning )?blue"),
    L("turning_blue", _M, "turning", r" blue"),
    L("turning_blue", _M, "blue", r" lips"),
    L("bleeding", _M, "vomiting throwing coughing puking", r"(?: up)? blood"),
    L(
        "bleeding",
        _M,
        "bleeding",
        r" (?:a lot|heavily|badly|everywhere|(?:that )?wont stop)",
    ),
    L("bleeding", _M, "cant wont", r" stop (?:the )?bleeding"),
)
del L

# --------------------------------------------------------------------- negation

_NEGATORS: Final = frozenset(
    map(
        _sq,
        (
            "not",
            "no",
            "never",
            "dont",
            "didnt",
            "doesnt",
            "isnt",
            "arent",
            "wasnt",
            "werent",
            "havent",
            "hasnt",
            "hadnt",
            "wont",
            "wouldnt",
            "shouldnt",
            "without",
            "denies",
            "denied",
            "deny",
            "nor",
            "nunca",
            "stopped",
            "zero",
            "cero",
            "sin",
            "ni",
            "jamas",
            "tampoco",
            "ningun",
            "ninguna",
            "ninguno",
            "nada",
            "none",
            "nope",
            "nah",
        ),
    )
)
# A word that starts a new clause ends the look-back: "no i want to die".
_RESTART: Final = frozenset(
    map(_sq, ("i", "im", "ive", "id", "ill", "and", "so", "then", "though", "yet", "she"))
)
# ..unless it continues the negated verb: "i dont think i want to die".
_BRIDGE: Final = frozenset(
    map(_sq, ("think", "like", "that", "believe", "feel", "mean", "say", "said"))
)
_NEG_WINDOW: Final = 7  # words looked back from the match


def _negated(before: list[str]) -> bool:
    """True when a negator shortly before the match, in the same clause, applies.

    `before` holds the words preceding the match, nearest last.
    """
    words = before[-_NEG_WINDOW:]
    for i in range(len(words) - 1, -1, -1):
        word = words[i]
        if word == "|":
            return False
        if word in _NEGATORS:
            return True
        if word in _RESTART and not (i > 0 and words[i - 1] in _BRIDGE):
            return False
    return False


# --------------------------------------------------------------------- matching

_LETTER_RUN: Final = re.compile(r"(?<!\\)([a-z])\1+")


def _squeeze_pattern(pattern: str) -> str:
    """Squeeze doubled letters in a pattern like `normalize` does in the text."""
    return _LETTER_RUN.sub(r"\1", pattern)


_Rule = tuple[re.Pattern[str], LexiconEntry]


def _index(entries: tuple[LexiconEntry, ...]) -> dict[str, tuple[_Rule, ...]]:
    """Rules by lead word, so a message is only tried against rows it could start."""
    index: dict[str, list[_Rule]] = {}
    for entry in entries:
        leads = sorted({_sq(w) for w in entry.leads.split()}, key=len, reverse=True)
        rx = re.compile(
            "(?:"
            + "|".join(map(re.escape, leads))
            + r")\b(?:"
            + _squeeze_pattern(entry.tail)
            + r")\b"
        )
        for lead in leads:
            index.setdefault(lead, []).append((rx, entry))
    return {lead: tuple(rules) for lead, rules in index.items()}


_BY_LEAD: Final = _index(LEXICON)
_LEADS: Final = frozenset(_BY_LEAD)
_RANK: Final[dict[CrisisCategory, int]] = {c: i for i, c in enumerate(_PRIORITY)}


# Lexicon rows for softer signs (passive wishes, burden, farewells, self-harm told as
# recent): a clinician today, not a crisis reply.
_SOFTER: Final = frozenset(
    {
        "wish_dead",
        "wish_not_born",
        "not_wake_up",
        "dont_want_to_live",
        "no_reason_to_live",
        "better_off_without_me",
        "giving_away",
        "cutting_again",
        "want_it_to_end",
    }
)


def _lexicon(norm: str, words: list[str]) -> list[tuple[int, CrisisMatch]]:
    """The explicit lexicon's non-negated matches in normalized text (critical), with the
    index of the word each starts at."""
    if _LEADS.isdisjoint(words):
        return []
    found: list[tuple[int, CrisisMatch]] = []
    pos = 0
    for i, word in enumerate(words):
        rules = _BY_LEAD.get(word)
        if rules is not None:
            for rx, entry in rules:
                if rx.match(norm, pos) is None or _negated(words[:i]):
                    continue
                tier = Tier.HIGH if entry.id in _SOFTER else Tier.CRITICAL
                found.append((i, CrisisMatch(entry.category, entry.id, tier)))
                break
        pos += len(word) + 1
    return found


def _top_level(alternation: str) -> list[str]:
    """Split ``a|b(c|d)|e`` at its top-level bars only."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(alternation):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(alternation[start:k])
            start = k + 1
    parts.append(alternation[start:])
    return parts


_FIRST_WORD: Final = re.compile(r"([a-z0-9]+)(s\?)?(?=$| |\\b)")


def _leads(pattern: str) -> frozenset[str] | None:
    """The words a concept pattern can start with, read from its opening alternation
    (``\b(?:i have|im|gun)`` starts with "i", "im" or "gun"); None when some branch does
    not start with a plain word (the pattern is then always tried). A branch written with
    accents can never match the normalized text and adds nothing."""
    if not pattern.startswith("\\b"):
        return None
    rest = pattern[2:]
    if rest.startswith("(?:"):
        depth, end = 0, -1
        for k, ch in enumerate(rest):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    end = k
                    break
        if end < 0:
            return None
        options = _top_level(rest[3:end])
        if rest[end + 1 : end + 2] in ("?", "*"):
            return None  # the whole opening group is optional
    else:
        options = [rest]
    words: set[str] = set()
    for option in options:
        if not option.isascii():
            continue
        head = _FIRST_WORD.match(option)
        if head is None:
            return None
        word = head.group(1)
        words.update({word, word + "s"} if head.group(2) else {word})
    return frozenset(_sq(w) for w in words)


def _concept_index() -> tuple[dict[str, list[int]], list[int]]:
    by_lead: dict[str, list[int]] = {}
    always: list[int] = []
    for k, rule in enumerate(crisis_rules.RULES):
        leads = _leads(rule.pattern)
        if leads is None:
            always.append(k)
        else:
            for lead in leads:
                by_lead.setdefault(lead, []).append(k)
    return by_lead, always


_CONCEPTS: Final = crisis_rules.compiled(_squeeze_pattern)
_CONCEPT_LEADS, _CONCEPT_ALWAYS = _concept_index()
# Per lead word, every rule it leads as one alternation: a quick "could any of them match
# here?" in one call; the rules are tried one by one only where it says yes.
_CONCEPT_ANY: Final = {
    lead: re.compile("|".join(f"(?:{_CONCEPTS[k][0].pattern})" for k in ks))
    for lead, ks in _CONCEPT_LEADS.items()
}


def _concepts(norm: str, words: list[str]) -> list[tuple[int, CrisisMatch]]:
    """The concept rules' non-negated matches, with the word index each starts at. A rule
    with literal lead words is tried only where the text has one of them."""
    found: list[tuple[int, CrisisMatch]] = []
    seen: set[str] = set()

    def take(i: int, rule: crisis_rules.Rule) -> None:
        if rule.id in seen or _negated(words[:i]):
            return
        seen.add(rule.id)
        found.append((i, CrisisMatch(CrisisCategory(rule.category), rule.id, Tier(rule.tier))))

    pos = 0
    for i, word in enumerate(words):
        any_rule = _CONCEPT_ANY.get(word)
        if any_rule is not None and any_rule.match(norm, pos) is not None:
            for k in _CONCEPT_LEADS[word]:
                rx, rule = _CONCEPTS[k]
                if rule.id not in seen and rx.match(norm, pos) is not None:
                    take(i, rule)
        pos += len(word) + 1
    for k in _CONCEPT_ALWAYS:
        rx, rule = _CONCEPTS[k]
        if rule.id in seen:
            continue
        m = rx.search(norm)
        if m is not None:
            take(norm.count(" ", 0, m.start()), rule)
    return found


_LAUGHING_EMOJI: Final = frozenset("\U0001f602\U0001f923\U0001f606\U0001f605\U0001f639")
# Categories whose everyday hyperbole ("heart attack lol", "OD'd on cookies 😂") a laugh
# marks; a laugh never clears suicidal, self-harm or harm-to-others language.
_HYPERBOLE: Final = frozenset({CrisisCategory.OVERDOSE, CrisisCategory.MEDICAL_EMERGENCY})


# The frames, squeezed as the text is (their words are written in ordinary spelling:
# "feeling better now" must match "feling beter now").
_HISTORY: Final = re.compile(_squeeze_pattern(crisis_rules.HISTORY.pattern))
_HYPOTHETICAL: Final = re.compile(_squeeze_pattern(crisis_rules.HYPOTHETICAL.pattern))
_DENIAL: Final = re.compile(_squeeze_pattern(crisis_rules.DENIAL.pattern))


# Car trouble, and the words that would make a car in a garage dangerous after all.
_CAR_TROUBLE: Final = re.compile(
    _squeeze_pattern(
        r"\b(?:(?:check )?engine light|oil change|flat tire|tire pressure|mechanic|car wash|"
        r"dealership|(?:not|isnt|wasnt|arent) running|wont start|broke down|dead battery|"
        r"taller mecanico|"
        r"llanta ponchada|cambio de aceite|no arranca|no prende)\b"
    )
)
_CAR_WORDS: Final = re.compile(
    _squeeze_pattern(
        r"\b(?:car|truck|engine|garage|mechanic|oil|tire|dealership|carro|coche|auto|"
        r"camioneta|garaje|cochera|taller|llanta|aceite)\b"
    )
)
_CAR_DANGER: Final = re.compile(
    _squeeze_pattern(
        r"\b(?:(?<!not )(?<!isnt )(?<!wasnt )(?<!arent )running|idling|exhaust|fumes|hose|door(?:s)? (?:shut|closed)|close the door|"
        r"carbon monoxide|fall asleep|sleep|not wake|wake up|goodbye|end it|die|dead|"
        r"encendido|prendido|humo|gases|monoxido|dormir|despertar|adios|morir)\b"
    )
)


# A clause that is only an answer word right after the match: "ideas de hacerme daño: no",
# "self harm? nope".
_ANSWERED_NO: Final = frozenset(
    map(
        _sq,
        (
            "no",
            "nope",
            "none",
            "nah",
            "never",
            "nunca",
            "ninguna",
            "ninguno",
            "tampoco",
            "cero",
            "zero",
        ),
    )
)


def _answered_no(words: list[str], i: int) -> bool:
    end = i
    while end < len(words) and words[end] != "|":
        end += 1
    rest = words[end + 1 : end + 3]
    return bool(rest) and rest[0] in _ANSWERED_NO and (len(rest) == 1 or rest[1] == "|")


def _framed(words: list[str], i: int, match: CrisisMatch, laughing: bool) -> bool:
    """True when the match sits in a clause that tells history, asks a hypothetical, or
    laughs off hyperbole: the clause itself and the one after it are read. Someone else's
    danger is never framed away: a relative texting from the patient's phone ("she wont wake
    up") is the patient's emergency."""
    start = i
    while start > 0 and words[start - 1] != "|":
        start -= 1
    end, clauses = i, 0
    while end < len(words) and clauses < 2:
        if words[end] == "|":
            clauses += 1
        end += 1
    window = " ".join(words[start:end])
    if _HISTORY.search(window) or _HYPOTHETICAL.search(window) or _answered_no(words, i):
        return True
    return laughing and match.category in _HYPERBOLE


_TWO_DIGITS: Final = re.compile(r"[0-9]{2}")
_BP_SLASH: Final = re.compile(r"\b([0-9]{2,3})\s*/\s*([0-9]{2,3})\b")
_BP_WORDS: Final = re.compile(r"\b([0-9]{2,3}) (?:over|con|sobre|x|por) ([0-9]{2,3})\b")
_BP_CONTEXT: Final = re.compile(
    r"\b(?:bp|blood pressure|pressure|presion|tension|cuff|mmhg|aparato|me marco|salio|reading)\b"
)


def _readings(text: str, norm: str) -> list[tuple[int, int, str]]:
    """Blood-pressure-shaped number pairs: (systolic, diastolic, as written)."""
    pairs = [(m.group(1), m.group(2)) for m in _BP_SLASH.finditer(text)]
    pairs += [(m.group(1), m.group(2)) for m in _BP_WORDS.finditer(norm)]
    out = []
    for high, low in pairs:
        systolic, diastolic = int(high), int(low)
        if 80 <= systolic <= 300 and 40 <= diastolic <= 200 and systolic > diastolic:
            out.append((systolic, diastolic, high))
    return out


def _blood_pressure(text: str, norm: str) -> list[tuple[int, CrisisMatch]]:
    """A reading written as numbers at or above 180 systolic or 120 diastolic: "bp 192/104",
    "200 over 100", "la presion 190 con 120". A bare "x/y" counts only with both numbers in a
    blood pressure's range and a pressure word nearby, so dates and scores stay out."""
    context = bool(_BP_CONTEXT.search(norm))
    for systolic, diastolic, high in _readings(text, norm):
        if systolic < 180 and diastolic < 120:
            continue
        if not context and not (systolic >= 150 and diastolic >= 90):
            continue
        index = norm.find(high)
        i = norm.count(" ", 0, index) if index >= 0 else 0
        match = CrisisMatch(CrisisCategory.MEDICAL_EMERGENCY, "blood_pressure", Tier.CRITICAL)
        return [(i, match)]
    return []


def _best(found: list[CrisisMatch]) -> CrisisMatch | None:
    if not found:
        return None
    return min(found, key=lambda m: (m.tier is not Tier.CRITICAL, _RANK[m.category]))


def detect_rules(text: str, norm: str | None = None) -> CrisisMatch | None:
    """The rules' verdict alone: the explicit lexicon and the concept rules, outside
    history, hypothetical and laughing frames."""
    if norm is None:
        norm = normalize(text)
    words = norm.split(" ")
    candidates = [*_lexicon(norm, words), *_concepts(norm, words)]
    if _TWO_DIGITS.search(text):
        candidates += _blood_pressure(text, norm)
    if not candidates:
        return None
    laughing = bool(crisis_rules.LAUGHING.search(norm)) or any(ch in _LAUGHING_EMOJI for ch in text)
    found = [m for i, m in candidates if not _framed(words, i, m, laughing)]
    return _best(found)


def _word_classes() -> dict[str, tuple[str, ...]]:
    """``crisis_concepts.CONCEPTS`` by normalized word, as messages are normalized."""
    index: dict[str, list[str]] = {}
    for kind, words in crisis_concepts.CONCEPTS.items():
        for word in words.split():
            for token in normalize(word).split(" "):
                if token and kind not in index.setdefault(token, []):
                    index[token].append(kind)
    return {word: tuple(kinds) for word, kinds in index.items()}


CONCEPT_INDEX: Final = _word_classes()


@functools.cache
def _scorer() -> Scorer:
    """The exported model, built on first use (training imports this module before a model
    of the current shape exists)."""
    return Scorer(crisis_model.CLASSES, crisis_model.BIAS, crisis_model.WEIGHTS, CONCEPT_INDEX)


MODEL_THRESHOLD: Final = crisis_model.THRESHOLD
MODEL_VERSION: Final = crisis_model.VERSION


def model_probabilities(text: str, norm: str | None = None) -> tuple[float, dict[str, float]]:
    """The learned model's crisis probability for the most alarming window of `text`, and
    that window's probability per class."""
    if norm is None:
        norm = normalize(text)
    words = [w for w in norm.split(" ") if w]
    scorer = _scorer()
    alarm, classes = scorer.probabilities(words)
    return alarm, dict(zip(scorer.classes, classes, strict=True))


def model_score(text: str) -> float:
    """The learned model's probability that `text` is a crisis message (any category)."""
    return model_probabilities(text)[0]


def detect(text: str) -> CrisisMatch | None:
    """The crisis in `text`, or None. Never raises on any `str`.

    The rules decide first (explicit cases are critical, concept rules carry their own
    tier); when no rule fires, a model score at or above ``MODEL_THRESHOLD`` is a high
    alarm in the model's most likely category, unless the whole message is a history,
    a hypothetical question or a laugh.
    """
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    norm = normalize(text)
    found = detect_rules(text, norm)
    if found is not None:
        return found
    if norm.count(" ") + 1 < MODEL_MIN_WORDS:
        return None
    alarm, probabilities = model_probabilities(text, norm)
    if alarm < MODEL_THRESHOLD:
        return None
    if _HISTORY.search(norm) or _HYPOTHETICAL.search(norm) or _DENIAL.search(norm):
        return None
    category = max((c for c in probabilities if c != "none"), key=lambda c: probabilities[c])
    if _CAR_TROUBLE.search(norm) and not _CAR_DANGER.search(norm):
        # the model learned cars in garages from carbon-monoxide messages; a car at the
        # mechanic's is not one. Only the car talk is set aside: the rest of the message
        # is read again on its own, and alarms if it alarms by itself.
        rest = " | ".join(c for c in norm.split(" | ") if not _CAR_WORDS.search(c))
        if not rest.strip() or model_probabilities(rest, rest)[0] < MODEL_THRESHOLD:
            return None
    if category == CrisisCategory.MEDICAL_EMERGENCY and _TWO_DIGITS.search(text):
        readings = _readings(text, norm)
        if readings and all(s < 180 and d < 120 for s, d, _ in readings):
            # a reading below the line is the rule's to judge, not the model's
            return None
    return CrisisMatch(CrisisCategory(category), "model", Tier.HIGH)


MAX_TEXT: Final = 1600
# The model reads sentences: on a two- or three-word reply ("headache last night") its few
# features carry too much weight, and the rules already cover short explicit messages.
MODEL_MIN_WORDS: Final = 4


# ------------------------------------------------------------------------ reply

CRISIS_REPLY_MAX_SEPTETS: Final = 320  # at most two concatenated GSM-7 segments
_NAME_MAX: Final = 40
_PHONE_MAX: Final = 24

# GSM-7 only: Spanish drops á í ó ú (not in GSM 03.38) but keeps é and ñ.
_REPLIES: Final[dict[str, tuple[str, str, str, str]]] = {
    # (body, alerted with clinic, alerted without clinic, call-back with phone)
    "en": (
        "We are worried about you. Please call or text 988 now (Suicide & Crisis Lifeline,"
        " free, 24/7). If you are in danger or this is an emergency, call 911.",
        " Your care team at {clinic} has been alerted.",
        " Your care team has been alerted.",
        " You can also call them at {phone}.",
    ),
    "es": (
        "Nos preocupa. Llame o envie un texto al 988 ahora (Linea de Prevencion del Suicidio"
        " y Crisis, gratis, 24/7; para español oprima 2). Si esta en peligro o es una"
        " emergencia, llame al 911.",
        " Su equipo en {clinic} ya fue avisado.",
        " Su equipo de atencion ya fue avisado.",
        " Tambien puede llamar al {phone}.",
    ),
}
# The answer to softer signs (tier high): who has been told, what happens if nobody takes
# it up (``flows.text.high_followup``), and 988 now if unsafe.
_CONCERN: Final[dict[str, tuple[str, str, str, str]]] = {
    "en": (
        "Thank you for telling us. If you feel unsafe, call or text 988 now (free, 24/7);"
        " in an emergency call 911.",
        " Your care team at {clinic} has been told.",
        " Your care team has been told.",
        " You can also call them at {phone}.",
    ),
    "es": (
        "Gracias por contarnos. Si se siente en peligro, llame o envie un texto al 988 ahora"
        " (gratis, 24/7); en una emergencia llame al 911.",
        " Su equipo en {clinic} ya fue avisado.",
        " Su equipo de atencion ya fue avisado.",
        " Tambien puede llamar al {phone}.",
    ),
}


def _gsm_safe(value: str, limit: int) -> str:
    """Make a configured value fit the reply: GSM-7 basic set, one line, bounded."""
    if not all(ch in GSM7_BASIC for ch in value):
        value = "".join(ch for ch in _strip_accents(value) if ch in GSM7_BASIC)
    value = " ".join(value.split()).strip(" .,;:-")
    if len(value) > limit:
        value = value[:limit].rstrip(" .,;:-")
    return value


def reply_for(
    tier: Tier,
    language: str,
    clinic_name: str,
    clinic_phone: str,
    *,
    page_after_minutes: int = PAGE_AFTER_MINUTES,
) -> str:
    """The immediate answer to a detected message: crisis resources for critical (the
    on-call is paged at once); for high, 988, who has been told and when the on-call is
    paged if nobody takes it up."""
    if tier is Tier.CRITICAL:
        return crisis_reply(language, clinic_name, clinic_phone)
    followup = " " + high_followup(language, page_after_minutes)
    return _compose(_CONCERN, language, clinic_name, clinic_phone, followup)


def crisis_reply(language: str, clinic_name: str, clinic_phone: str) -> str:
    """The immediate answer to crisis language: 988, 911, care team alerted.

    Spanish for "es"/"es-*"/"es_*", English otherwise. Always GSM-7 and at most
    `CRISIS_REPLY_MAX_SEPTETS` septets whatever the configuration: clinic name
    and phone are cleaned (accents stripped, other characters dropped) and cut
    to fit; each is left out with its sentence when empty.
    """
    return _compose(_REPLIES, language, clinic_name, clinic_phone)


def _compose(
    replies: dict[str, tuple[str, str, str, str]],
    language: str,
    clinic_name: str,
    clinic_phone: str,
    followup: str = "",
) -> str:
    lang = language.strip().lower().replace("_", "-").split("-", 1)[0]
    body, with_clinic, without_clinic, with_phone = replies.get(lang, replies["en"])
    clinic = _gsm_safe(clinic_name, _NAME_MAX)
    phone = _gsm_safe(clinic_phone, _PHONE_MAX)
    call_back = with_phone.format(phone=phone) if phone else ""
    if len(body) + len(without_clinic) + len(followup) + len(call_back) > CRISIS_REPLY_MAX_SEPTETS:
        call_back = ""  # the follow-up promise matters more than the clinic's number
    fixed = len(body) + len(with_clinic) - len("{clinic}") + len(followup) + len(call_back)
    clinic = _gsm_safe(clinic, max(0, CRISIS_REPLY_MAX_SEPTETS - fixed))
    alerted = with_clinic.format(clinic=clinic) if clinic else without_clinic
    return body + alerted + followup + call_back
