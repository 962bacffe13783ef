"""Typed keys for everything the app holds; no module globals."""

from __future__ import annotations

import asyncio

from aiohttp import web
from twilio.request_validator import RequestValidator

from bot.clock import Clock
from bot.keyed_locks import KeyedLocks
from bot.metrics import Metrics
from bot.services.outbox import GroupRecorder
from bot.services.reply_batch import ReplyGroups
from bot.settings import Settings
from bot.sms.transport import Transport
from db.session import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
TRANSPORT = web.AppKey("transport", Transport)


class TaskSet:
    """Tasks started after a response; shutdown waits for them."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()


BACKGROUND = web.AppKey("background", TaskSet)
METRICS = web.AppKey("metrics", Metrics)
RECORDER = web.AppKey("recorder", GroupRecorder)
SENDER_LOCKS = web.AppKey("sender_locks", KeyedLocks)
REPLY_GROUPS = web.AppKey("reply_groups", ReplyGroups)
# built in create_app when signatures are checked (an auth token is set); absent otherwise
TWILIO_VALIDATOR = web.AppKey("twilio_validator", RequestValidator)
