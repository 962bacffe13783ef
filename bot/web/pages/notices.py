"""What a page says after a redirect, chosen from fixed codes.

A redirect carries ``?notice=<code>`` or ``?error=<code>``; the page shows the text
kept here. Free text in a URL would let anyone craft a link that shows a trusted page
saying whatever they like ("call this number"); an unknown code shows nothing. An
error that needs details of the input is shown by re-rendering the form (422), never
through the URL.
"""

from __future__ import annotations

from aiohttp import web

NOTICES: dict[str, str] = {
    # patients
    "treatment_recorded": "Treatment recorded; its check-ins are scheduled.",
    "treatment_changed": "Treatment corrected; its check-ins are rescheduled.",
    "treatment_deleted": "Treatment deleted; its check-ins that had not started are cancelled.",
    "checkin_scheduled": "Check-in scheduled now (quiet hours still apply).",
    "enrolled": "Enrolled; the protocol's check-ins are scheduled.",
    "status_changed": "The patient's status is changed.",
    "patient_saved": "Saved.",
    "text_queued": "Your text is on its way to the patient.",
    # escalations
    "claimed": "You have claimed this escalation.",
    "released": "Released: the escalation is open again.",
    "resolved": "Escalation resolved.",
    "assigned": "Assigned.",
    "taken_over": "You have taken over this escalation.",
    # users
    "created": "The user is created; they can sign in now.",
    "deactivated": "The user is deactivated; their sessions and API tokens have ended.",
    "reactivated": "The user is active again.",
    "unlocked": "The account's failed sign-ins are forgiven; it is no longer locked.",
    "role": "The role is changed; it applies from the user's next page.",
    "password": "The new password is set; the user's sessions and API tokens have ended.",
    "on_call": "The on-call rota is updated.",
    "revoked": "The token is revoked.",
    # flows and protocols
    "published": "Published as a new version; running check-ins keep the version they began.",
    "republished": "The chosen version is published again as the newest version.",
    "retired": "Retired: no new check-ins will use it.",
    "retired_named": "Retired: no new check-ins will use it. Some protocols still name it: "
    "edit them so they stop scheduling it.",
    "discarded": "Draft discarded.",
    # the demo phone
    "demo_started": "The check-in started: its first message is on the phone.",
    "demo_queued": "The check-in is queued: it starts when the current conversation ends.",
}

ERRORS: dict[str, str] = {
    "inactive": "The patient is not active or has opted out.",
    "choose_disposition": "Choose a disposition.",
    "already_claimed": "Another clinician has claimed this escalation.",
    "already_resolved": "This escalation is already resolved.",
    "not_claimed": "This escalation is not claimed.",
    "not_yours": "Only the clinician who claimed it, or an admin, can do that.",
    "confirm_running": "A safety check-in is still running: tick the box to resolve anyway.",
    "choose_clinician": "Choose an active clinician to hand this escalation to.",
    "demo_no_number": "Choose a patient or type a number like +12025550123.",
    "demo_empty": "Type a message first.",
    "demo_too_long": "That message is too long.",
    "demo_unreachable": "The webhook could not be reached; try again.",
    "demo_refused": "The webhook refused the message.",
    "demo_unknown": "That number is not a patient's.",
    "demo_no_flow": "No published flow by that name.",
}


def shown(request: web.Request) -> tuple[str, str]:
    """The notice and the error a redirect asked for; unknown codes show nothing."""
    return (
        NOTICES.get(request.query.get("notice", ""), ""),
        ERRORS.get(request.query.get("error", ""), ""),
    )


def to(path: str, *, notice: str = "", error: str = "") -> web.HTTPSeeOther:
    """A redirect to ``path`` (no query of its own) showing a known notice or error."""
    assert notice in NOTICES or not notice, notice
    assert error in ERRORS or not error, error
    query = f"?notice={notice}" if notice else (f"?error={error}" if error else "")
    return web.HTTPSeeOther(path + query)
