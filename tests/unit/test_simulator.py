"""The pure simulator, the validate/simulate commands and the shipped JSON Schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

from bot.cli_flows import SCHEMA_PATH, simulate_command, validate_command
from flows.engine import Context, Outcome
from flows.model import flow_json_schema, flow_schema_text
from flows.simulator import simulate
from tests.unit.test_engine import MINI_PHQ, NOW, SCREEN, flow

CTX = Context("Ana", clinic_name="Lakeside")


def test_simulate_transcript_answers_scores_escalations() -> None:
    t = simulate(flow("mini_phq"), ["2", "bogus", "1", "3"], context=CTX, start=NOW)
    assert [ln.who for ln in t.lines][:3] == ["bot", "patient", "bot"]
    assert [(a.key, a.value) for a in t.answers] == [("q1", 2), ("q2", 1), ("q3", 3)]
    assert [(f, s.name, s.total, s.band) for f, s in t.scores] == [
        ("mini_phq", "mini", 6.0, "high")
    ]
    assert [e.reason for _, e in t.escalations] == ["mini_high", "q3_positive"]
    assert t.outcome is Outcome.COMPLETED
    rendered = t.render()
    assert "you> bogus" in rendered and "mini_phq.mini = 6 (high)" in rendered
    assert json.loads(json.dumps(t.to_json()))["outcome"] == "completed"


def test_simulate_follows_handover_with_prefill() -> None:
    flows = {"mini_phq": flow("mini_phq")}
    t = simulate(flow("screen"), ["3", "0", "0"], context=CTX, start=NOW, resolve=flows.get)
    assert t.flows == ["screen", "mini_phq"]
    assert [(a.flow, a.key, a.raw) for a in t.answers][:2] == [
        ("screen", "q1", "3"),
        ("mini_phq", "q1", None),
    ]
    assert t.outcome is Outcome.COMPLETED


def test_simulate_without_resolver_stops_at_handover_and_counts_unused() -> None:
    t = simulate(flow("screen"), ["3", "0"], context=CTX, start=NOW)
    assert t.flows == ["screen"] and t.unused_replies == 1


def test_simulate_unfinished_has_no_outcome() -> None:
    t = simulate(flow("mini_phq"), ["1"], context=CTX, start=NOW)
    assert t.outcome is None and "still waiting" in t.render()


def test_simulate_crisis() -> None:
    t = simulate(flow("mini_phq"), ["1", "I took too many pills"], context=CTX, start=NOW)
    assert t.outcome is Outcome.CRISIS
    assert t.escalations[0][1].reason == "crisis_language"


def test_validate_command(tmp_path: Path) -> None:
    good = tmp_path / "screen.yaml"
    good.write_text(SCREEN.replace("handover: mini_phq", "handover: phq9"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI_PHQ.replace("next: q2", "next: q7"))
    out = io.StringIO()
    assert validate_command([str(good)], out) == 0  # handover target is in the library
    assert validate_command([str(bad), str(tmp_path / "missing.yaml")], out) == 1
    lines = out.getvalue().splitlines()
    assert any(ln.startswith(f"{bad}:") and "unknown node 'q7'" in ln for ln in lines)
    assert any(ln.startswith(f"{tmp_path / 'missing.yaml'}:1:1: cannot read") for ln in lines)


def test_validate_says_ok_per_file_and_reads_directories(tmp_path: Path) -> None:
    flows_dir = tmp_path / "flows"
    (flows_dir / "nested").mkdir(parents=True)
    (flows_dir / "screen.yaml").write_text(SCREEN.replace("handover: mini_phq", "handover: phq9"))
    (flows_dir / "nested" / "mini.yml").write_text(MINI_PHQ)
    (flows_dir / "notes.txt").write_text("not a flow")
    out = io.StringIO()
    assert validate_command([str(flows_dir)], out) == 0
    assert out.getvalue().splitlines() == [
        f"{flows_dir / 'nested' / 'mini.yml'}: ok",
        f"{flows_dir / 'screen.yaml'}: ok",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    out = io.StringIO()
    assert validate_command([str(empty)], out) == 1
    assert "no .yaml or .yml files" in out.getvalue()


def test_the_shipped_library_validates_as_a_directory() -> None:
    from bot.cli_flows import __file__ as cli_file

    library = Path(cli_file).resolve().parent.parent / "flows" / "library"
    out = io.StringIO()
    assert validate_command([str(library)], out) == 0, out.getvalue()
    assert out.getvalue().count(": ok") >= 10


def test_validate_command_knows_flows_on_the_command_line(tmp_path: Path) -> None:
    screen = tmp_path / "screen.yaml"
    screen.write_text(SCREEN.replace("handover: mini_phq", "handover: other_flow"))
    other = tmp_path / "other.yaml"
    other.write_text(MINI_PHQ.replace("key: mini_phq", "key: other_flow"))
    out = io.StringIO()
    assert validate_command([str(screen)], out) == 1
    assert "unknown flow 'other_flow'" in out.getvalue()
    assert validate_command([str(screen), str(other)], io.StringIO()) == 0


def test_simulate_command_script_and_interactive(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(MINI_PHQ)
    script = tmp_path / "replies.txt"
    script.write_text("2\n1\n0\n")
    out = io.StringIO()
    assert simulate_command(str(path), str(script), "en", out, io.StringIO()) == 0
    assert "Outcome: completed" in out.getvalue()
    out = io.StringIO()
    assert simulate_command(str(path), None, "es", out, io.StringIO("1\n/remind\n/expire\n")) == 0
    text = out.getvalue()
    assert "Hola Alex" in text and "Recordatorio de" in text and "Outcome: expired" in text


def test_simulate_command_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: x\n")
    out = io.StringIO()
    assert simulate_command(str(bad), None, "en", out, io.StringIO()) == 1
    assert "missing required key" in out.getvalue()
    assert simulate_command("no_such_flow", None, "en", io.StringIO(), io.StringIO()) == 2


def test_shipped_json_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text("utf-8") == flow_schema_text(), (
        "regenerate with: python -m bot.cli_flows write-schema"
    )
    schema = flow_json_schema()
    assert set(schema["required"]) == {"key", "title", "nodes"}
