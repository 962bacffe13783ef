"""Escalation reason codes in plain words for the queue."""

from __future__ import annotations

PLAIN = {
    "crisis_language": "Crisis language in a text",
    "item9_positive": "Thoughts of death or self-harm (PHQ-9 item 9)",
    "item9_unanswered": "PHQ-9 item 9 not answered",
    "phq9_severe": "Severe depression score (PHQ-9 ≥ 20)",
    "phq9_moderately_severe": "Moderately severe depression score (PHQ-9 15-19)",
    "possible_relapse": "Possible relapse: PHQ-9 rose 5+ points from best",
    "sustained_worsening": "Two PHQ-9 ≥ 10 in a row after a response",
    "gad7_severe": "Severe anxiety score (GAD-7 ≥ 15)",
    "gad7_moderate": "Moderate anxiety score (GAD-7 10-14)",
    "cssrs_intent": "C-SSRS: suicidal intent",
    "cssrs_plan": "C-SSRS: suicidal intent with a plan",
    "cssrs_recent_behavior": "C-SSRS: suicidal behaviour in the past 3 months",
    "cssrs_method": "C-SSRS: thought about a method",
    "cssrs_ideation": "C-SSRS: suicidal thoughts",
    "cssrs_incomplete": "C-SSRS screen not finished",
    "cssrs_lifetime_behavior": "C-SSRS: suicidal behaviour, more than 3 months ago",
    "bp_emergency_signs": "Blood-pressure emergency signs after treatment",
    "prolonged_dissociation": "Dissociation lasting over 24 h or severe",
    "drove_after_session": "Drove before a night's sleep after treatment",
    "substance_use_outside_clinic": "Substance use outside the clinic",
    "cravings": "Cravings",
    "very_low_mood": "Very low mood",
    "not_responding": "Not responding to check-ins",
    "unreachable": "Texts are failing to reach the patient",
    "opted_out": "Patient opted out of texts (STOP)",
    "patient_message": "Message from a patient outside a check-in",
    "flow_stalled": "A check-in stopped unexpectedly",
}


def plain(reason: str) -> str:
    return PLAIN.get(reason, reason.replace("_", " ").capitalize())
