"""``serve``, ``worker`` and ``demo`` refuse to start with one line that says what to do."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.cli import main
from bot.migrations import upgrade

SECRET = "s" * 40


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "clinic.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("LOG_FORMAT", "text")
    return db


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The refusal: one line starting ``aftercare:`` (after any log records), no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    refusals = [line for line in err.splitlines() if line.startswith("aftercare:")]
    assert len(refusals) == 1, err
    return refusals[0]


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"]])
def test_a_missing_database_file_says_run_migrate(
    env: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 2
    line = _one_line(capsys)
    assert "no database file" in line and "aftercare migrate" in line
    assert not env.exists()  # nothing was created


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"]])
def test_an_unmigrated_or_old_database_says_run_migrate(
    env: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env.touch()
    assert main(command) == 2
    assert "has not been migrated: run `aftercare migrate`" in _one_line(capsys)
    upgrade(f"sqlite+aiosqlite:///{env}", "0010")
    capsys.readouterr()  # the migration's own log
    assert main(command) == 2
    assert "at migration 0010, this version needs" in _one_line(capsys)


def test_an_unreachable_database_is_one_line_with_its_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://app:pw@127.0.0.1:{port}/clinic")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    assert main(["worker"]) == 2
    line = _one_line(capsys)
    assert f"cannot reach the database at 127.0.0.1:{port}/clinic" in line
    assert "pw" not in line.replace("app:pw", "")  # never the password
    assert "app:pw" not in line


def test_a_busy_port_names_port(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upgrade(f"sqlite+aiosqlite:///{env}")
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    line = _one_line(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "PORT" in line
