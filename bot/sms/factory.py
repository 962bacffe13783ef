"""Choosing the transport from the settings."""

from __future__ import annotations

from bot.settings import Settings
from bot.sms.console import ConsoleTransport, stdout_echo
from bot.sms.transport import Transport


def build_transport(settings: Settings) -> Transport:
    """Called inside the running loop (the Twilio client opens an aiohttp session)."""
    if settings.sms_transport == "twilio":
        from bot.sms.twilio_transport import TwilioTransport

        assert settings.twilio_account_sid and settings.twilio_auth_token
        return TwilioTransport(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from_number,
            status_callback=settings.public_base_url + "/twilio/status",
            timeout_s=settings.send_timeout_s,
            api_base=settings.twilio_api_base,
        )
    # the demo's operator reads what would be sent (to their own terminal, never the log);
    # elsewhere the console transport logs only that a text went, masked
    return ConsoleTransport(echo=stdout_echo() if settings.demo else None)
