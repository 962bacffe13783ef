"""Semantic checks of a flow that passed the schema: references, graph shape, templates, SMS size.

Each check reports at the YAML node it is about, so an admin can jump to it.
The graph checks guarantee the engine's promises: every node is reachable,
every node can reach an end, and no loop runs without waiting for the patient.

A flow that fails the schema still gets :func:`check_references`: the checks that need
only the parsed YAML (duplicate node ids, unknown node targets and answer sets, handovers),
so an admin sees those in the same pass as the schema errors, not in a later round.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flows import gsm
from flows.model import (
    ID_PATTERN,
    AnswerSpec,
    AnswerValue,
    AskNode,
    ChoiceOption,
    ChoiceSpec,
    Condition,
    EndNode,
    EscalateNode,
    Flow,
    IntegerSpec,
    Next,
    SayNode,
    ScaleOption,
    ScaleSpec,
    YesNoSpec,
)
from flows.parsing import NO_WORDS, YES_WORDS, phrase
from flows.problems import MAX_PROBLEMS, Problem, Severity, TooManyProblems
from flows.text import DOTTED_PREFIXES, GLOBAL_VARIABLES, parse, stray_brace
from flows.yamlsrc import Source

Path = tuple[str | int, ...]
MAX_SMS = 320
_PLACEHOLDER_WIDTH = 10
"""Characters a ``{variable}`` is assumed to take when measuring message length."""


@dataclass
class _Check:
    flow: Flow
    src: Source
    known_flows: Collection[str] | None
    problems: list[Problem] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    questions: dict[str, AnswerSpec | None] = field(default_factory=dict)
    scores: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        self._add(self.src.problem(path, message, key=key))

    def warn(self, path: Path, message: str) -> None:
        self._add(self.src.problem(path, message, severity=Severity.WARNING))

    def _add(self, problem: Problem) -> None:
        """Collecting stops after ``MAX_PROBLEMS`` errors (the costly ones, with their "did
        you mean"); warnings are cheap and the caller caps what it shows."""
        self.problems.append(problem)
        if problem.is_error and sum(p.is_error for p in self.problems) > MAX_PROBLEMS:
            raise TooManyProblems(self.problems)


def check_flow(
    flow: Flow, src: Source, *, known_flows: Collection[str] | None = None
) -> list[Problem]:
    """All semantic problems of ``flow`` (read from ``src``), errors and warnings."""
    c = _Check(flow, src, known_flows)
    _index(c)
    _answer_specs(c)
    known = _transitions(c)
    if _safety(c) and known:
        _graph(c)
    _scores(c)
    _conditions(c)
    _templates(c)
    _handovers(c)
    return c.problems


def _suggest(name: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- names -----------------------------------------------------------------------------------


def _index(c: _Check) -> None:
    for i, node in enumerate(c.flow.nodes):
        if node.id in c.ids:
            first = c.src.pos(("nodes", c.ids[node.id], "id"))[0]
            c.error(
                ("nodes", i, "id"), f"duplicate node id {node.id!r} (first used on line {first})"
            )
            continue
        c.ids[node.id] = i
    for node in c.flow.nodes:
        if isinstance(node, AskNode):
            spec = node.answer if not isinstance(node.answer, str) else None
            if spec is None:
                spec = c.flow.answer_sets.get(str(node.answer))
            c.questions.setdefault(node.answer_key, spec)
    for i, score in enumerate(c.flow.scores):
        if score.name in c.scores:
            c.error(("scores", i, "name"), f"duplicate score name {score.name!r}")
        c.scores.add(score.name)
        for j, flag in enumerate(score.flags):
            if flag.name in c.flags:
                c.error(("scores", i, "flags", j, "name"), f"duplicate flag name {flag.name!r}")
            c.flags.add(flag.name)


# -- answers ---------------------------------------------------------------------------------


def _answer_specs(c: _Check) -> None:
    for name, spec in c.flow.answer_sets.items():
        _spec(c, ("answer_sets", name), spec)
    for i, node in enumerate(c.flow.nodes):
        if not isinstance(node, AskNode):
            continue
        if isinstance(node.answer, str):
            if node.answer not in c.flow.answer_sets:
                c.error(
                    ("nodes", i, "answer"),
                    f"unknown answer set {node.answer!r}"
                    + _suggest(node.answer, c.flow.answer_sets),
                )
        else:
            _spec(c, ("nodes", i, "answer"), node.answer)


def _languages(c: _Check) -> set[str]:
    langs = {"en", c.flow.language}
    for node in c.flow.nodes:
        text = getattr(node, "text", None)
        if isinstance(text, dict):
            langs.update(text)
    return langs


def _spec(c: _Check, path: Path, spec: AnswerSpec) -> None:
    if isinstance(spec, ScaleSpec | ChoiceSpec):
        options: Sequence[ScaleOption | ChoiceOption] = spec.options
        seen: dict[object, int] = {}
        for j, opt in enumerate(options):
            if opt.value in seen:
                c.error((*path, "options", j, "value"), f"duplicate option value {opt.value!r}")
            seen[opt.value] = j
        for lang in sorted(_languages(c)):
            entries: list[tuple[str, AnswerValue, Path]] = []
            for j, opt in enumerate(options):
                opath = (*path, "options", j)
                label = opt.label if isinstance(opt.label, str) else opt.label.get(lang)
                if label is not None:
                    entries.append((label, opt.value, (*opath, "label")))
                syn = opt.synonyms
                words = syn if isinstance(syn, list) else syn.get(lang, [])
                entries += [(w, opt.value, (*opath, "synonyms")) for w in words]
            _conflicts(c, entries)
    elif isinstance(spec, YesNoSpec):
        builtin = [(w, True, (*path, "type")) for w in YES_WORDS]
        builtin += [(w, False, (*path, "type")) for w in NO_WORDS]
        extra: list[tuple[str, AnswerValue, Path]] = []
        for answer, syn in ((True, spec.synonyms.yes), (False, spec.synonyms.no)):
            sub = "yes" if answer else "no"
            words = syn if isinstance(syn, list) else [w for ws in syn.values() for w in ws]
            extra += [(w, answer, (*path, "synonyms", sub)) for w in words]
        _conflicts(c, builtin + extra, report_from=len(builtin))


def _conflicts(
    c: _Check, entries: Sequence[tuple[str, AnswerValue, Path]], report_from: int = 0
) -> None:
    seen: dict[str, AnswerValue] = {}
    for n, (text, value, path) in enumerate(entries):
        key = phrase(text)
        if not key:
            if n >= report_from:
                c.error(path, f"{text!r} has no letters or digits to match a reply against")
            continue
        if key in seen and seen[key] != value and n >= report_from:
            c.error(path, f"{text!r} would match two different answers ({seen[key]!r}, {value!r})")
        seen.setdefault(key, value)


# -- transitions and graph -------------------------------------------------------------------


def _next_of(node: Any) -> Next | None:
    return getattr(node, "next", None)


def _targets(nxt: Next | None) -> list[str]:
    if nxt is None:
        return []
    if isinstance(nxt, str):
        return [nxt]
    return [r.goto for r in nxt]


def _transitions(c: _Check) -> bool:
    """Check targets and route lists; False if a target is unknown (graph checks would be noise)."""
    known = True
    for i, node in enumerate(c.flow.nodes):
        nxt = _next_of(node)
        if nxt is None:
            continue
        if isinstance(nxt, str):
            if nxt not in c.ids:
                c.error(("nodes", i, "next"), f"unknown node {nxt!r}" + _suggest(nxt, c.ids))
                known = False
            continue
        for j, route in enumerate(nxt):
            if route.goto not in c.ids:
                c.error(
                    ("nodes", i, "next", j, "goto"),
                    f"unknown node {route.goto!r}" + _suggest(route.goto, c.ids),
                )
                known = False
            last = j == len(nxt) - 1
            if last and route.when is not None:
                c.error(
                    ("nodes", i, "next", j),
                    "the last route must have no 'when': it is the default when no condition holds",
                )
            if not last and route.when is None:
                c.error(
                    ("nodes", i, "next", j),
                    "only the last route may omit 'when' (the routes after it could never run)",
                )
    return known


def _safety(c: _Check) -> bool:
    """A safety question's unanswered branch must escalate; False if a target is unknown."""
    known = True
    for i, node in enumerate(c.flow.nodes):
        if not isinstance(node, AskNode):
            continue
        spec = c.questions.get(node.answer_key)
        if node.affirmative is not None and not isinstance(spec, ScaleSpec):
            c.error(("nodes", i, "affirmative"), "'affirmative' applies to scale answers only")
        elif (
            node.affirmative is not None
            and isinstance(spec, ScaleSpec)
            and node.affirmative not in {o.value for o in spec.options}
        ):
            c.error(
                ("nodes", i, "affirmative"),
                f"{node.affirmative} is not one of the scale's option values",
            )
        if node.unanswered is None:
            if node.safety:
                c.error(
                    ("nodes", i, "safety"),
                    "a safety question needs 'unanswered': the escalate node to go to when it "
                    "stays unanswered after the re-asks (unanswered must never read as no)",
                )
            continue
        target = c.ids.get(node.unanswered)
        if target is None:
            c.error(
                ("nodes", i, "unanswered"),
                f"unknown node {node.unanswered!r}" + _suggest(node.unanswered, c.ids),
            )
            known = False
        elif node.safety and not isinstance(c.flow.nodes[target], EscalateNode):
            c.error(
                ("nodes", i, "unanswered"),
                f"a safety question's unanswered branch must escalate: {node.unanswered!r} "
                "is not an escalate node",
            )
    return known


def _edges(c: _Check) -> dict[str, list[str]]:
    edges = {node.id: [t for t in _targets(_next_of(node)) if t in c.ids] for node in c.flow.nodes}
    for node in c.flow.nodes:
        if isinstance(node, AskNode) and node.unanswered in c.ids:
            edges[node.id].append(node.unanswered)
    return edges


def _graph(c: _Check) -> None:
    nodes = c.flow.nodes
    edges = _edges(c)
    reached = _reach([nodes[0].id], edges)
    for i, node in enumerate(nodes):
        if node.id not in reached and c.ids.get(node.id) == i:
            c.error(("nodes", i), f"node {node.id!r} is unreachable: no route leads to it")
    terminal = [
        n.id
        for n in nodes
        if isinstance(n, EndNode) or (isinstance(n, EscalateNode) and n.next is None)
    ]
    reverse: dict[str, list[str]] = {n: [] for n in edges}
    for src_id, targets in edges.items():
        for t in targets:
            reverse[t].append(src_id)
    ending = _reach(terminal, reverse)
    for i, node in enumerate(nodes):
        if node.id in reached and node.id not in ending and c.ids.get(node.id) == i:
            c.error(("nodes", i), f"node {node.id!r} can never reach an end node")
    for cycle in _silent_cycles(c, edges):
        first = min(c.ids[n] for n in cycle)
        start = cycle.index(nodes[first].id)
        ordered = cycle[start:] + cycle[:start]
        loop = " → ".join([*ordered, ordered[0]])
        c.error(
            ("nodes", first),
            f"nodes {loop} loop without asking anything: the conversation would never wait "
            "for the patient (put an ask node in the loop)",
        )


def _reach(starts: Sequence[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen = set(starts)
    todo = list(starts)
    while todo:
        for t in edges.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _silent_cycles(c: _Check, edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected groups of non-ask nodes that contain a cycle (Tarjan's algorithm)."""
    asks = {n.id for n in c.flow.nodes if isinstance(n, AskNode)}
    sub = {n: [t for t in ts if t not in asks] for n, ts in edges.items() if n not in asks}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(root: str) -> None:
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sub[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sub[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1 or v in sub[v]:
                        out.append(sorted(group, key=lambda n: c.ids[n]))

    for n in sub:
        if n not in index:
            visit(n)
    return out


# -- scores and conditions -------------------------------------------------------------------


def _numeric(spec: AnswerSpec | None) -> bool:
    if isinstance(spec, ScaleSpec | IntegerSpec | YesNoSpec):
        return True
    if isinstance(spec, ChoiceSpec):
        return all(isinstance(o.value, int) for o in spec.options)
    return False


def _scores(c: _Check) -> None:
    for i, score in enumerate(c.flow.scores):
        for j, item in enumerate(score.items):
            path = ("scores", i, "items", j)
            if item not in c.questions:
                c.error(
                    path,
                    f"score item {item!r} is not a question in this flow"
                    + _suggest(item, c.questions),
                )
            elif c.questions[item] is not None and not _numeric(c.questions[item]):
                c.error(
                    path, f"score item {item!r} has a non-numeric answer (text or named choices)"
                )
        if score.missing.max >= len(score.items):
            c.error(
                ("scores", i, "missing", "max"),
                f"missing.max ({score.missing.max}) must be less than the number of items "
                f"({len(score.items)})",
            )
        for j in range(1, len(score.bands)):
            if score.bands[j].min <= score.bands[j - 1].min:
                c.error(("scores", i, "bands", j, "min"), "bands must be in ascending order of min")


def _conditions(c: _Check) -> None:
    for i, node in enumerate(c.flow.nodes):
        nxt = _next_of(node)
        if isinstance(nxt, list):
            for j, route in enumerate(nxt):
                if route.when is not None:
                    _condition(c, ("nodes", i, "next", j, "when"), route.when, in_flag=False)
    for i, rule in enumerate(c.flow.rules):
        _condition(c, ("rules", i, "when"), rule.when, in_flag=False)
    for i, score in enumerate(c.flow.scores):
        for j, flag in enumerate(score.flags):
            _condition(c, ("scores", i, "flags", j, "when"), flag.when, in_flag=True)


def _condition(c: _Check, path: Path, cond: Condition, *, in_flag: bool) -> None:
    if cond.answer is not None or cond.answered is not None:
        name = cond.answer if cond.answer is not None else cond.answered
        assert name is not None
        if name not in c.questions:
            where = (*path, "answer" if cond.answer is not None else "answered")
            c.error(where, f"unknown answer {name!r}" + _suggest(name, c.questions))
    for attr in ("score", "responded"):
        name = getattr(cond, attr)
        if name is not None and name not in c.scores:
            c.error((*path, attr), f"unknown score {name!r}" + _suggest(name, c.scores))
    if cond.flag is not None:
        if in_flag:
            c.error((*path, "flag"), "a flag's condition cannot use other flags")
        elif cond.flag not in c.flags:
            c.error((*path, "flag"), f"unknown flag {cond.flag!r}" + _suggest(cond.flag, c.flags))
    for attr, key in (("any_", "any"), ("all_", "all")):
        subs = getattr(cond, attr)
        for j, sub in enumerate(subs or ()):
            _condition(c, (*path, key, j), sub, in_flag=in_flag)
    if cond.not_ is not None:
        _condition(c, (*path, "not"), cond.not_, in_flag=in_flag)


# -- texts -----------------------------------------------------------------------------------


def _texts(flow: Flow) -> Iterator[tuple[Path, Any, bool, bool]]:
    """Every text as ``(path, text, is_sms, is_reminder)``."""
    for i, node in enumerate(flow.nodes):
        base: Path = ("nodes", i)
        if isinstance(node, AskNode | SayNode):
            yield (*base, "text"), node.text, True, False
        if isinstance(node, AskNode) and not isinstance(node.answer, str) and node.answer.hint:
            yield (*base, "answer", "hint"), node.answer.hint, True, False
        if isinstance(node, EndNode) and node.text is not None:
            yield (*base, "text"), node.text, True, False
        if isinstance(node, EscalateNode):
            yield (*base, "summary"), node.summary, False, False
            if node.reply is not None:
                yield (*base, "reply"), node.reply, True, False
    for name, spec in flow.answer_sets.items():
        if spec.hint:
            yield ("answer_sets", name, "hint"), spec.hint, True, False
    if flow.reminder and flow.reminder.text:
        yield ("reminder", "text"), flow.reminder.text, True, True
    if flow.expiry and flow.expiry.escalate:
        yield ("expiry", "escalate", "summary"), flow.expiry.escalate.summary, False, False
    for i, rule in enumerate(flow.rules):
        yield ("rules", i, "escalate", "summary"), rule.escalate.summary, False, False


def _templates(c: _Check) -> None:
    for path, text, is_sms, is_reminder in _texts(c.flow):
        variants = (
            [(path, text)]
            if isinstance(text, str)
            else [((*path, lang), t) for lang, t in text.items()]
        )
        for vpath, template in variants:
            _template(c, vpath, template, is_reminder)
            if is_sms:
                _sms_size(c, vpath, template)


def _template(c: _Check, path: Path, template: str, is_reminder: bool) -> None:
    offset = stray_brace(template)
    if offset is not None:
        c.error(
            path,
            f"stray {template[offset]!r} at character {offset + 1}: write {{{{ or }}}} for a "
            "literal brace, or {name} for a variable",
        )
    for _, name in parse(template):
        if name is None or name in GLOBAL_VARIABLES or (is_reminder and name == "question"):
            continue
        prefix, _, rest = name.partition(".")
        if prefix in DOTTED_PREFIXES and rest:
            known = c.questions if prefix == "answer" else c.scores
            if rest in known:
                continue
            c.error(path, f"unknown template variable {{{name}}}: no {prefix} named {rest!r}")
            continue
        allowed = sorted(GLOBAL_VARIABLES | ({"question"} if is_reminder else set()))
        c.error(
            path,
            f"unknown template variable {{{name}}}: use {', '.join(allowed)}, answer.<key>, "
            "score.<name> or band.<name>",
        )


def _sms_size(c: _Check, path: Path, template: str) -> None:
    sample = "".join(
        literal + ("x" * _PLACEHOLDER_WIDTH if name else "") for literal, name in parse(template)
    )
    if not gsm.is_gsm7(sample):
        chars = " ".join(gsm.non_gsm7_chars(sample))
        c.warn(
            path,
            f"characters outside GSM-7 ({chars}) force UCS-2: 70 characters per SMS segment "
            "instead of 160",
        )
        length = len(sample)
    else:
        length = gsm.gsm7_length(sample)
    if length > MAX_SMS:
        c.warn(path, f"message is about {length} characters, over {MAX_SMS} (more than 2 SMS)")


def _handovers(c: _Check) -> None:
    for i, node in enumerate(c.flow.nodes):
        if not isinstance(node, EndNode) or node.handover is None:
            continue
        path = ("nodes", i, "handover")
        if node.handover == c.flow.key:
            c.error(path, f"flow {c.flow.key!r} hands over to itself")
        elif c.known_flows is not None and node.handover not in c.known_flows:
            c.error(
                path,
                f"handover to unknown flow {node.handover!r}"
                + _suggest(node.handover, c.known_flows),
            )


# -- on the parsed YAML alone (when the schema fails) ---------------------------------------

_ID = re.compile(ID_PATTERN)
_ROUTING = frozenset({"ask", "say", "branch", "escalate"})
"""Node types that have ``next`` (an end node's ``next`` is the schema's unknown key)."""


def _as_id(value: str) -> str:
    """What a malformed id probably meant: ``Alert`` → ``alert``, ``ask-mood`` → ``ask_mood``."""
    return re.sub(r"[^a-z0-9_]", "_", value.strip().lower())[:64]


def _is_id(value: Any) -> bool:
    """A well-formed id: one that is not, the schema reports itself."""
    return isinstance(value, str) and len(value) <= 64 and _ID.fullmatch(value) is not None


def check_references(
    data: Any, src: Source, *, known_flows: Collection[str] | None = None
) -> list[Problem]:
    """The reference checks of :func:`check_flow` that need only the parsed YAML mapping.

    For a flow that failed the schema: duplicate node ids, ``next``/``goto``/``unanswered``
    naming no node, ``answer`` naming no answer set, and handovers to itself or to an unknown
    flow, with the same messages and positions as :func:`check_flow`. Values of the wrong
    shape are left to the schema's own messages. Raises :class:`TooManyProblems` past
    ``MAX_PROBLEMS``, like :func:`check_flow`.
    """
    out: list[Problem] = []

    def error(path: Path, message: str) -> None:
        out.append(src.problem(path, message))
        if len(out) > MAX_PROBLEMS:
            raise TooManyProblems(out)

    if not isinstance(data, dict):
        return out
    nodes = data.get("nodes")
    nodes = [n if isinstance(n, dict) else {} for n in nodes] if isinstance(nodes, list) else []
    ids: dict[str, int] = {}
    malformed: set[str] = set()  # ids the schema refuses: a target may mean one once fixed
    for i, node in enumerate(nodes):
        nid = node.get("id")
        if not isinstance(nid, str):
            continue
        if not _is_id(nid):
            malformed.add(_as_id(nid))
        if nid in ids:
            first = src.pos(("nodes", ids[nid], "id"))[0]
            error(("nodes", i, "id"), f"duplicate node id {nid!r} (first used on line {first})")
            continue
        ids[nid] = i
    answer_sets = data.get("answer_sets")
    set_names = set(answer_sets) if isinstance(answer_sets, dict) else set()
    key = data.get("key")
    for i, node in enumerate(nodes):
        kind = node.get("type")
        targets: list[tuple[Path, Any]] = []
        if kind == "ask":
            targets.append((("nodes", i, "unanswered"), node.get("unanswered")))
        nxt = node.get("next") if kind in _ROUTING else None
        if isinstance(nxt, list):
            targets += [
                (("nodes", i, "next", j, "goto"), route.get("goto"))
                for j, route in enumerate(nxt)
                if isinstance(route, dict)
            ]
        else:
            targets.append((("nodes", i, "next"), nxt))
        for path, target in targets:
            if _is_id(target) and target not in ids and target not in malformed:
                error(path, f"unknown node {target!r}" + _suggest(target, ids))
        answer = node.get("answer")
        if kind == "ask" and _is_id(answer) and answer not in set_names:
            error(
                ("nodes", i, "answer"),
                f"unknown answer set {answer!r}" + _suggest(answer, set_names),
            )
        handover = node.get("handover")
        if kind != "end" or not _is_id(handover):
            continue
        if handover == key:
            error(("nodes", i, "handover"), f"flow {key!r} hands over to itself")
        elif known_flows is not None and handover not in known_flows:
            error(
                ("nodes", i, "handover"),
                f"handover to unknown flow {handover!r}" + _suggest(handover, known_flows),
            )
    return out
