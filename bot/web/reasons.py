"""Escalation reason codes in plain words for the queue (``flows.reasons`` holds them)."""

from __future__ import annotations

from flows.reasons import label

plain = label

__all__ = ["plain"]
