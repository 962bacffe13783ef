"""``aftercare validate`` and ``aftercare simulate``: the flow engine at the terminal.

Both take their output stream (and input, for simulate) as arguments so tests
can drive them without a subprocess. ``python -m bot.cli_flows write-schema``
regenerates the shipped JSON Schema of flow files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from flows import yamlsrc
from flows.definition import load_flow, validate_flow_source
from flows.engine import Context, Expired, Input, ReminderDue, Reply
from flows.model import Flow, flow_schema_text
from flows.problems import Problem, SourceError
from flows.simulator import Line, Session, Transcript, simulate

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "flows" / "schema" / "flow.schema.json"

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _library_flows() -> dict[str, str]:
    from bot.library import flow_sources

    return flow_sources()


def _is_protocol(text: str) -> bool:
    try:
        data = yamlsrc.load(text).data
    except SourceError:
        return False
    return isinstance(data, dict) and "checkins" in data


def _flow_key(text: str) -> str | None:
    try:
        data = yamlsrc.load(text).data
    except SourceError:
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def _yaml_files(paths: Sequence[str], out: TextIO) -> tuple[list[str], bool]:
    """Files as given, and each directory's ``*.yaml``/``*.yml`` files (recursively)."""
    files: list[str] = []
    failed = False
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(
            str(p) for p in Path(path).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        if not found:
            out.write(f"{path}: no .yaml or .yml files in this directory\n")
            failed = True
        files.extend(found)
    return files, failed


def validate_command(paths: Sequence[str], out: TextIO) -> int:
    """Print ``file:line:col: message`` for every problem and ``file: ok`` for a file
    without errors; 1 if any is an error, else 0. A directory means its YAML files."""
    sources: list[tuple[str, str]] = []
    files, failed = _yaml_files(paths, out)
    for path in files:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.write(f"{path}:1:1: cannot read the file: {exc}\n")
            failed = True
            continue
        sources.append((path, text))
    known = set(_library_flows())
    for path, text in sources:
        if not _is_protocol(text):
            known.add(_flow_key(text) or Path(path).stem)
    for path, text in sources:
        problems: list[Problem]
        if _is_protocol(text):
            from flows.protocol import validate_protocol_source

            _, problems = validate_protocol_source(text, known_flows=known)
        else:
            _, problems = validate_flow_source(text, known_flows=known)
        for problem in problems:
            out.write(problem.format(path) + "\n")
        if not any(p.is_error for p in problems):
            warnings = f" ({len(problems)} warnings)" if problems else ""
            out.write(f"{path}: ok{warnings}\n")
        failed = failed or any(p.is_error for p in problems)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _load(flow: str, out: TextIO) -> tuple[Flow | None, int]:
    """The flow named by a library key or a YAML path, or print why not."""
    library = _library_flows()
    path = Path(flow)
    if flow in library and not path.is_file():
        name, text = f"<library:{flow}>", library[flow]
    elif path.is_file():
        name, text = flow, path.read_text("utf-8")
    else:
        keys = ", ".join(sorted(library)) or "none"
        out.write(f"error: {flow!r} is neither a flow file nor a library flow (library: {keys})\n")
        return None, EXIT_USAGE
    try:
        return load_flow(text), EXIT_OK
    except SourceError as exc:
        for problem in exc.problems:
            out.write(problem.format(name) + "\n")
        return None, EXIT_PROBLEMS


def simulate_command(flow: str, script: str | None, lang: str, out: TextIO, inp: TextIO) -> int:
    """Chat with a flow (interactive) or run a script of replies; print the transcript."""
    loaded, code = _load(flow, out)
    if loaded is None:
        return code
    cache: dict[str, Flow | None] = {loaded.key: loaded}

    def resolve(key: str) -> Flow | None:
        if key not in cache:
            text = _library_flows().get(key)
            try:
                cache[key] = load_flow(text) if text is not None else None
            except SourceError:
                cache[key] = None
        return cache[key]

    context = Context(
        first_name=os.environ.get("SIMULATE_FIRST_NAME", "Alex"),
        language=lang,
        clinic_name=os.environ.get("CLINIC_NAME", "Demo Clinic"),
        clinic_phone=os.environ.get("CLINIC_PHONE", "+1 555 0100"),
    )
    now = datetime.now(UTC)
    if script is not None:
        try:
            replies = Path(script).read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            out.write(f"error: cannot read the script {script}: {exc}\n")
            return EXIT_USAGE
        transcript = simulate(loaded, replies, context=context, start=now, resolve=resolve)
        out.write(transcript.render() + "\n")
        return EXIT_OK
    return _interactive(Session(loaded, context, now, resolve), out, inp)


def _interactive(session: Session, out: TextIO, inp: TextIO) -> int:
    out.write("Type replies; /remind and /expire simulate timeouts; Ctrl-D quits.\n")
    _print(session.transcript.lines, out)
    while session.active:
        out.write("you> ")
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n")
            break
        text = line.rstrip("\n")
        item: Input
        if text.strip() == "/remind":
            item = ReminderDue()
        elif text.strip() == "/expire":
            item = Expired()
        else:
            item = Reply(text)
        _print([ln for ln in session.send(item) if ln.who == "bot"], out)
    out.write("\n" + _summary(session.transcript) + "\n")
    return EXIT_OK


def _print(lines: Sequence[Line], out: TextIO) -> None:
    for ln in lines:
        out.write(f"bot> {ln.text}\n")


def _summary(transcript: Transcript) -> str:
    rendered = transcript.render()
    return rendered[rendered.index("Answers:") :]


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Regenerate the shipped JSON Schema of flow files from the models."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(flow_schema_text(), "utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["write-schema"]:
        write_schema()
        print(f"wrote {SCHEMA_PATH}")
    else:
        print("usage: python -m bot.cli_flows write-schema", file=sys.stderr)
        sys.exit(EXIT_USAGE)
