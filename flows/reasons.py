"""Escalation reasons: every code the system raises, with the words clinicians see.

Flows name their own reasons in data (``escalate: {reason: ...}``); the ones the
shipped library uses are listed here too so the queue can label them. A code
missing from this enum is still shown, spelled out from its underscores.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # raised by the system itself
    CRISIS_LANGUAGE = "crisis_language"
    CONCERNING_LANGUAGE = "concerning_language"
    FLOW_STALLED = "flow_stalled"
    NOT_RESPONDING = "not_responding"
    UNREACHABLE = "unreachable"
    OPTED_OUT = "opted_out"
    PATIENT_MESSAGE = "patient_message"
    # raised by the shipped flows
    ITEM9_POSITIVE = "item9_positive"
    ITEM9_UNANSWERED = "item9_unanswered"
    PHQ9_SEVERE = "phq9_severe"
    PHQ9_MODERATELY_SEVERE = "phq9_moderately_severe"
    POSSIBLE_RELAPSE = "possible_relapse"
    SUSTAINED_WORSENING = "sustained_worsening"
    GAD7_SEVERE = "gad7_severe"
    GAD7_MODERATE = "gad7_moderate"
    CSSRS_INTENT = "cssrs_intent"
    CSSRS_PLAN = "cssrs_plan"
    CSSRS_RECENT_BEHAVIOR = "cssrs_recent_behavior"
    CSSRS_METHOD = "cssrs_method"
    CSSRS_IDEATION = "cssrs_ideation"
    CSSRS_INCOMPLETE = "cssrs_incomplete"
    CSSRS_LIFETIME_BEHAVIOR = "cssrs_lifetime_behavior"
    BP_EMERGENCY_SIGNS = "bp_emergency_signs"
    BP_SIGNS_UNANSWERED = "bp_signs_unanswered"
    CSSRS_UNANSWERED = "cssrs_unanswered"
    PROLONGED_DISSOCIATION = "prolonged_dissociation"
    DISSOCIATION_EPISODES = "dissociation_episodes"
    DISSOCIATION_SEVERE = "dissociation_severe"
    DROVE_AFTER_SESSION = "drove_after_session"
    NEXT_DAY_SEDATION = "next_day_sedation"
    POST_SESSION_NO_RESPONSE = "post_session_no_response"
    SUBSTANCE_USE_OUTSIDE_CLINIC = "substance_use_outside_clinic"
    CRAVINGS = "cravings"
    VERY_LOW_MOOD = "very_low_mood"
    PATIENT_NOTE = "patient_note"
    BP_SIGNS_PASSED = "bp_signs_passed"
    ASRM_POSITIVE = "asrm_positive"
    COMMAND_HALLUCINATIONS = "command_hallucinations"
    PSYCHOSIS_UNANSWERED = "psychosis_unanswered"
    PSYCHOTIC_SYMPTOMS = "psychotic_symptoms"
    HEMATURIA = "hematuria"
    URINARY_SYMPTOMS = "urinary_symptoms"
    ALCOHOL_RISK = "alcohol_risk"
    SEDATIVE_MISUSE = "sedative_misuse"


LABELS: dict[Reason, str] = {
    Reason.CRISIS_LANGUAGE: "Crisis language in a text",
    Reason.CONCERNING_LANGUAGE: "Worrying language in a text (softer signs of risk)",
    Reason.FLOW_STALLED: "A check-in stopped unexpectedly",
    Reason.NOT_RESPONDING: "Not responding to check-ins",
    Reason.UNREACHABLE: "Texts are failing to reach the patient",
    Reason.OPTED_OUT: "Patient opted out of texts (STOP or carrier)",
    Reason.PATIENT_MESSAGE: "Message from a patient outside a check-in",
    Reason.ITEM9_POSITIVE: "Thoughts of death or self-harm (PHQ-9 item 9)",
    Reason.ITEM9_UNANSWERED: "PHQ-9 item 9 not answered",
    Reason.PHQ9_SEVERE: "Severe depression score (PHQ-9 ≥ 20)",
    Reason.PHQ9_MODERATELY_SEVERE: "Moderately severe depression score (PHQ-9 15-19)",
    Reason.POSSIBLE_RELAPSE: "Possible relapse: PHQ-9 rose 5+ points from best",
    Reason.SUSTAINED_WORSENING: "Two PHQ-9 ≥ 10 in a row after a response",
    Reason.GAD7_SEVERE: "Severe anxiety score (GAD-7 ≥ 15)",
    Reason.GAD7_MODERATE: "Moderate anxiety score (GAD-7 10-14)",
    Reason.CSSRS_INTENT: "C-SSRS: suicidal intent",
    Reason.CSSRS_PLAN: "C-SSRS: suicidal intent with a plan",
    Reason.CSSRS_RECENT_BEHAVIOR: "C-SSRS: suicidal behaviour in the past 3 months",
    Reason.CSSRS_METHOD: "C-SSRS: thought about a method",
    Reason.CSSRS_IDEATION: "C-SSRS: suicidal thoughts",
    Reason.CSSRS_INCOMPLETE: "C-SSRS screen not finished",
    Reason.CSSRS_LIFETIME_BEHAVIOR: "C-SSRS: suicidal behaviour, more than 3 months ago",
    Reason.BP_EMERGENCY_SIGNS: "Blood-pressure emergency signs after treatment",
    Reason.BP_SIGNS_UNANSWERED: "Blood-pressure warning-sign question not answered",
    Reason.CSSRS_UNANSWERED: "C-SSRS question not answered",
    Reason.PROLONGED_DISSOCIATION: "Dissociation lasting past the expected hours, or severe",
    Reason.DISSOCIATION_EPISODES: "Dissociation episodes between treatments",
    Reason.DISSOCIATION_SEVERE: "Severe dissociation",
    Reason.DROVE_AFTER_SESSION: "Drove before a night's sleep after treatment",
    Reason.NEXT_DAY_SEDATION: "Still sedated the day after treatment",
    Reason.POST_SESSION_NO_RESPONSE: "No answer to the post-session check",
    Reason.SUBSTANCE_USE_OUTSIDE_CLINIC: "Substance use outside the clinic",
    Reason.CRAVINGS: "Cravings",
    Reason.VERY_LOW_MOOD: "Very low mood",
    Reason.PATIENT_NOTE: "The patient left a note",
    Reason.BP_SIGNS_PASSED: "Blood-pressure warning signs after treatment, now passed",
    Reason.ASRM_POSITIVE: "Possible hypomania or mania (ASRM ≥ 6)",
    Reason.COMMAND_HALLUCINATIONS: "Voices telling the patient to harm",
    Reason.PSYCHOSIS_UNANSWERED: "Question on commanding voices not answered",
    Reason.PSYCHOTIC_SYMPTOMS: "New psychotic symptoms",
    Reason.HEMATURIA: "Blood in the urine (possible ketamine cystitis)",
    Reason.URINARY_SYMPTOMS: "Urinary symptoms (possible ketamine cystitis)",
    Reason.ALCOHOL_RISK: "Hazardous drinking likely (AUDIT-C ≥ 4)",
    Reason.SEDATIVE_MISUSE: "Benzodiazepines or opioids not as prescribed",
}


def label(reason: str) -> str:
    """The words for a reason code; unknown codes (a flow's own) spelled out."""
    try:
        return LABELS[Reason(reason)]
    except ValueError:
        return reason.replace("_", " ").capitalize()
