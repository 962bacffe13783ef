"""Message texts: picking the patient's language and filling ``{placeholders}``.

Templates are substituted by our own regex, never ``str.format``: format specs
and attribute access (``{x.__class__}``) would let a flow definition read
interpreter internals. Only ``{name}`` and ``{answer.key}``-style dotted names
are recognised; ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?)\}")
_STRAY = re.compile(r"[{}]")

GLOBAL_VARIABLES = frozenset(
    {
        "first_name",
        "clinic_name",
        "clinic_phone",
        "crisis_line",
        "high_followup",
        "during_clinic_hours",
    }
)
"""Variables every template may use."""
DOTTED_PREFIXES = frozenset({"answer", "score", "band"})
CRISIS_LINE = "988"

PAGE_AFTER_MINUTES = 60  # the service's default for PAGE_HIGH_AFTER_MINUTES


def high_followup(language: str, minutes: int = PAGE_AFTER_MINUTES) -> str:
    """What happens after a high result, in words true at any hour: clinicians see it at
    once and the on-call is paged if nobody has taken it up in time. GSM-7 only."""
    if _lang(language) == "es":
        return (
            f"Si nadie de su equipo lo atiende en {minutes} minutos, se avisa al medico de guardia."
        )
    return (
        f"If no one from your care team has taken it up within {minutes} minutes,"
        " the on-call clinician is paged."
    )


def during_clinic_hours(language: str, hours: str = "") -> str:
    """When lower-priority messages are read (``CLINIC_HOURS`` when it is set)."""
    if _lang(language) == "es":
        return f"en horario de la clinica ({hours})" if hours else "en horario de la clinica"
    return f"during clinic hours ({hours})" if hours else "during clinic hours"


def _lang(language: str) -> str:
    return language.strip().lower().replace("_", "-").split("-", 1)[0]


Resolver = Callable[[str], str | None]
Part = tuple[str, str | None]


def pick(text: str | Mapping[str, str], language: str) -> str:
    """The text in ``language``, else English; a plain string serves every language."""
    if isinstance(text, str):
        return text
    found = text.get(language)
    if found is None:
        found = text["en"]
    return found


def variants(text: str | Mapping[str, str]) -> list[tuple[str | None, str]]:
    """Every language variant of ``text`` as ``(language or None for plain, template)``."""
    if isinstance(text, str):
        return [(None, text)]
    return list(text.items())


@lru_cache(maxsize=4096)
def parse(template: str) -> tuple[Part, ...]:
    """Split ``template`` into ``(literal, variable or None)`` parts (cached: templates repeat)."""
    parts: list[Part] = []
    pos = 0
    literal: list[str] = []
    for m in _TOKEN.finditer(template):
        literal.append(template[pos : m.start()])
        pos = m.end()
        if m.group(1) is None:
            literal.append(m.group(0)[0])
        else:
            parts.append(("".join(literal), m.group(1)))
            literal = []
    literal.append(template[pos:])
    parts.append(("".join(literal), None))
    return tuple(parts)


def variables(template: str) -> list[str]:
    """The variable names ``template`` uses, in order."""
    return [name for _, name in parse(template) if name is not None]


def stray_brace(template: str) -> int | None:
    """Offset of a ``{`` or ``}`` that is neither escaped nor part of a placeholder."""
    pos = 0
    for m in _TOKEN.finditer(template):
        stray = _STRAY.search(template, pos, m.start())
        if stray:
            return stray.start()
        pos = m.end()
    stray = _STRAY.search(template, pos)
    return stray.start() if stray else None


def render(template: str, resolve: Resolver) -> str:
    """Fill ``template``; a variable ``resolve`` does not know is left as written."""
    if "{" not in template and "}" not in template:
        return template
    out: list[str] = []
    for literal, name in parse(template):
        out.append(literal)
        if name is not None:
            value = resolve(name)
            out.append("{" + name + "}" if value is None else value)
    return "".join(out)


def mapping_resolver(values: Mapping[str, str]) -> Resolver:
    """A resolver over a plain mapping (tests, previews)."""
    return values.get
