"""The crisis detector's categories, tiers, frames and corpus (flows.safety, flows.crisis_rules)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from flows import engine, safety
from flows.definition import load_flow
from flows.engine import Context, Reply
from flows.gsm import gsm7_length, non_gsm7_chars
from flows.safety import CRISIS_REPLY_MAX_SEPTETS, CrisisCategory, Tier, detect, reply_for
from flows.text import during_clinic_hours
from tests.crisis_corpus import load

C, S, OD, H, X, M, P = (
    Tier.CRITICAL,
    CrisisCategory.SUICIDAL,
    CrisisCategory.OVERDOSE,
    CrisisCategory.SELF_HARM,
    CrisisCategory.HARM_TO_OTHERS,
    CrisisCategory.MEDICAL_EMERGENCY,
    CrisisCategory.PSYCHOSIS_COMMAND,
)


@pytest.mark.parametrize(
    ("text", "category", "tier"),
    [
        ("i bought a rope yesterday", S, Tier.CRITICAL),
        ("ya compre la soga", S, Tier.CRITICAL),
        ("sitting in the garage with the car running", S, Tier.CRITICAL),
        ("wrote letters to my kids, theyre in the drawer for after", S, Tier.CRITICAL),
        ("my family would be better off without me", S, Tier.HIGH),
        ("some nights i hope i dont wake up", S, Tier.HIGH),
        ("quisiera dormirme y no despertar", S, Tier.HIGH),
        ("took the whole bottle of my sleeping pills", OD, Tier.CRITICAL),
        ("me tome todo el frasco de paracetamol", OD, Tier.CRITICAL),
        ("burned myself with a lighter again tonight", H, Tier.CRITICAL),
        ("been cutting again, nothing that needs stitches", H, Tier.HIGH),
        ("im going to kill my husband tonight", X, Tier.CRITICAL),
        ("voy a matar a mi padrastro", X, Tier.CRITICAL),
        ("bp 192/104 and my head is pounding", M, Tier.CRITICAL),
        ("la presion me salio 200 con 120", M, Tier.CRITICAL),
        ("my left arm is numb and i cant lift it", M, Tier.CRITICAL),
        ("my daughter had her session and now she wont wake up", M, Tier.CRITICAL),
        ("the voices keep telling me to jump", P, Tier.CRITICAL),
        ("las voces me dicen que me mate", P, Tier.CRITICAL),
    ],
)
def test_categories_and_tiers(text: str, category: CrisisCategory, tier: Tier) -> None:
    match = detect(text)
    assert match is not None, text
    assert (match.category, match.tier) == (category, tier)


@pytest.mark.parametrize(
    "text",
    [
        "this commute is killing me",
        "me muero de la risa con mi hermana",
        "I crushed it at work",
        "bone tired",
        "overdosed on chocolate at my daughters party",
        "nunca quise lastimarme",
        "I'm not suicidal",
        "tried to take my life in 2015, doing ok now",
        "used to self harm, 4 years clean",
        "what should i do if i ever feel suicidal on a weekend?",
        "heard about that actor who died by suicide, its sad",
        "my bp was 135/85 this morning",
        "mood 2/5 today",
        "thought i was gonna die in spin class lol",
        "headache last night",
        # an answer word after the question it answers
        "thoughts of hurting myself? nope",
        # history told with an age, a year or a count of days
        "cuando tenia 19 intente matarme, hoy estoy bien y tengo dos hijas",
        "escribi sobre la vez que me corte en el 2015, ya lo supere",
        "llevo 300 dias limpia de autolesiones",
        # a plan that is only dinner
        "hoy cumplo 30 y me voy a cenar con mi familia",
        "we took them all to the zoo on saturday",
        "the car is in the garage, engine light is on again",
    ],
)
def test_idioms_denials_history_and_questions_do_not_alarm(text: str) -> None:
    assert detect(text) is None, (text, detect(text))


def test_blood_pressure_needs_a_reading_at_or_above_the_emergency_line() -> None:
    assert detect("cuff says 179/119") is None
    assert detect("cuff says 180/90") is not None
    assert detect("cuff says 150/121") is not None
    assert detect("12/25 was a good day") is None


def test_a_match_names_its_rule_never_the_patients_words() -> None:
    match = detect("my name is Jane and i bought a rope")
    assert match is not None and "jane" not in match.phrase


def test_replies_by_tier_in_both_languages() -> None:
    high_en = reply_for(Tier.HIGH, "en", "Lakeside", "+12025550100")
    assert "has been told" in high_en and "988" in high_en and "911" in high_en
    # what happens next, with the service's own paging delay
    assert "within 60 minutes, the on-call clinician is paged" in high_en
    high_es = reply_for(Tier.HIGH, "es", "Lakeside", "", page_after_minutes=30)
    assert "ya fue avisado" in high_es and "988" in high_es
    assert "en 30 minutos, se avisa al medico de guardia" in high_es
    critical_es = reply_for(Tier.CRITICAL, "es", "Lakeside", "")
    assert "Llame" in critical_es and "llame al 911" in critical_es


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("tier", [Tier.HIGH, Tier.CRITICAL])
def test_replies_fit_two_gsm7_segments_with_the_longest_settings(language: str, tier: Tier) -> None:
    reply = reply_for(
        tier, language, "N" * 80, "+1 (202) 555-0100 ext. 12345", page_after_minutes=1440
    )
    assert not non_gsm7_chars(reply)
    assert gsm7_length(reply) <= CRISIS_REPLY_MAX_SEPTETS
    assert "988" in reply and ("paged" in reply or "guardia" in reply or tier is Tier.CRITICAL)
    critical_es = reply_for(Tier.CRITICAL, "es", "Lakeside", "")
    assert "Llame" in critical_es and "llame al 911" in critical_es


def _phq9_run(reply: str) -> engine.Step:
    flow = load_flow(__import__("bot.library", fromlist=["x"]).flow_sources()["phq9"])
    now = datetime(2026, 3, 2, tzinfo=UTC)
    step = engine.start(flow, Context(first_name="Ana"), now)
    return engine.resume(flow, step.state, Reply(reply), now)


def test_in_a_check_in_critical_ends_it_and_high_raises_without_ending() -> None:
    critical = _phq9_run("i bought a rope yesterday")
    assert not critical.state.active
    assert [e.severity for e in critical.events if isinstance(e, engine.EscalationRequested)] == [
        engine.Severity.CRITICAL
    ]
    high = _phq9_run("2. honestly my family would be better off without me")
    assert high.state.active, "the check-in goes on"
    raised = [e for e in high.events if isinstance(e, engine.EscalationRequested)]
    assert [(e.severity, e.reason) for e in raised] == [
        (engine.Severity.HIGH, "concerning_language")
    ]
    assert any(isinstance(e, engine.AnswerRecorded) and e.value == 2 for e in high.events)


# -- the corpus ------------------------------------------------------------------------------


CORPUS = load()


def test_the_corpus_is_large_split_by_family_and_covers_both_languages() -> None:
    positives = [m for m in CORPUS if m.positive]
    negatives = [m for m in CORPUS if not m.positive]
    assert len(positives) >= 1500 and len(negatives) >= 1500
    spanish = sum(m.language == "es" for m in CORPUS) / len(CORPUS)
    assert spanish >= 0.35
    for language in ("en", "es"):
        assert {m.category for m in positives if m.language == language} == {
            str(c) for c in CrisisCategory
        }
    halves: dict[str, set[str]] = {}
    for m in CORPUS:
        halves.setdefault(m.family, set()).add(m.half)
    assert all(len(h) == 1 for h in halves.values()), "a family is never split"
    counts = Counter(m.half for m in CORPUS)
    assert min(counts.values()) > len(CORPUS) // 3


def test_the_development_half_stays_caught() -> None:
    """A floor on the half the rules were written from: a rule edit that loses what was
    caught fails here (the held-out figures are printed by bench/detector.py)."""
    dev = [m for m in CORPUS if m.half == "dev"]
    caught = sum(detect(m.text) is not None for m in dev if m.positive)
    alarms = sum(detect(m.text) is not None for m in dev if not m.positive)
    assert caught / sum(m.positive for m in dev) >= 0.72
    assert alarms / sum(not m.positive for m in dev) <= 0.03


def test_model_scores_are_probabilities() -> None:
    for m in CORPUS[:200]:
        assert 0.0 <= safety.model_score(m.text) <= 1.0


def test_flow_replies_say_when_with_the_services_settings() -> None:
    """{high_followup} and {during_clinic_hours} carry PAGE_HIGH_AFTER_MINUTES and
    CLINIC_HOURS through the conversation's context, and survive its JSON."""
    sources = __import__("bot.library", fromlist=["x"]).flow_sources()
    flow = load_flow(sources["cssrs_screen"])
    now = datetime(2026, 3, 2, tzinfo=UTC)
    ctx = Context(first_name="Ana", page_after_minutes=45, clinic_hours="Mon-Fri 9-5")

    def last_text(answers: list[str]) -> str:
        step = engine.start(flow, ctx, now)
        state = engine.ConversationState.from_json(step.state.to_json())
        for answer in answers:
            step = engine.resume(flow, state, Reply(answer), now)
            state = engine.ConversationState.from_json(step.state.to_json())
        sent = [e.text for e in step.events if isinstance(e, engine.SendMessage)]
        return sent[-1]

    # lifetime behaviour (high): the on-call paging delay
    assert "within 45 minutes, the on-call clinician is paged" in last_text(
        ["no", "no", "yes", "no"]
    )
    # wish to be dead only (moderate): read during clinic hours
    assert "during clinic hours (Mon-Fri 9-5)" in last_text(["yes", "no", "no"])
    assert during_clinic_hours("es-MX", "") == "en horario de la clinica"


@pytest.mark.parametrize(
    "text",
    [
        "i want to die. no one would even notice",
        "hoy me voy de este mundo, ya no aguanto",
        "self harm: yes, last night again",
        # newer euphemisms and plain acts
        "feelin real sewer slidey lately",
        "had leftover percs from my knee, took em all",
        "encontre las pastillas de mi mama y me las tome todas",
        "took a couple handfuls of my meds",
        "took way more klonopin than im prescribed",
        "brought the gun to the office, gonna use it on my boss",
        "sitting in the garage with the engine running",
    ],
)
def test_an_answer_word_or_a_date_never_hides_present_danger(text: str) -> None:
    assert detect(text) is not None, text


@pytest.mark.parametrize(
    "text",
    [
        "sitting in my car in the garage with the engine running, check engine light on, goodbye",
        "car in the garage, engine light on, and i just want to go to sleep and not wake up",
        "el carro en la cochera, encendido, con la puerta cerrada, adios",
    ],
)
def test_car_trouble_never_hides_a_car_in_a_closed_garage(text: str) -> None:
    found = safety.detect(text)
    assert found is not None and found.tier is Tier.CRITICAL


@pytest.mark.parametrize(
    "text",
    [
        "My car is at the mechanic. everything feels pointless and I am so tired of all of it",
        "oil change today. honestly i dont see the point of anything anymore, everyone would "
        "be better off without me",
    ],
)
def test_car_trouble_sets_aside_only_the_car_talk(text: str) -> None:
    assert safety.detect(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "my car is in the garage because it is not running",
        "car is in the garage, the mechanic says it is running fine",
    ],
)
def test_a_broken_or_repaired_car_in_a_garage_is_not_a_crisis(text: str) -> None:
    assert safety.detect(text) is None
