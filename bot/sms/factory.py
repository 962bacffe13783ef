"""Choosing the transport from the settings."""

from __future__ import annotations

from bot.settings import Settings
from bot.sms.console import ConsoleTransport
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
    return ConsoleTransport()
