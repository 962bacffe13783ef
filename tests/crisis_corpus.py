"""The labelled crisis corpus (tests/data/crisis/*.yaml): loading and the fixed split.

Messages come in families of paraphrases written by authors who had not read
the detector. Whole families go to one half, chosen by a hash of the family
id, so a paraphrase of a held-out message is never in the development half:
the development half is what rules are written from and the model trained
on; the held-out half only measures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

CORPUS = Path(__file__).parent / "data" / "crisis"
Half = Literal["dev", "heldout"]


@dataclass(frozen=True, slots=True)
class Message:
    family: str
    text: str
    language: str
    category: str  # "none" for a negative
    tier: str  # critical | high | none

    @property
    def positive(self) -> bool:
        return self.category != "none"

    @property
    def half(self) -> Half:
        digest = hashlib.sha256(self.family.encode()).digest()
        return "heldout" if digest[0] % 2 else "dev"


def load(directory: Path = CORPUS) -> list[Message]:
    out: list[Message] = []
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8"))
        language = str(data.get("language", "en"))
        for item in data["items"]:
            out.append(
                Message(
                    family=str(item["family"]),
                    text=str(item["text"]),
                    language=str(item.get("language", language)),
                    category=str(item["category"]),
                    tier=str(item["tier"]),
                )
            )
    return out


def half(messages: list[Message], which: Half) -> Iterator[Message]:
    return (m for m in messages if m.half == which)
