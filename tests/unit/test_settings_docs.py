"""docs/configuration.md's settings tables hold exactly the settings of
handler/entry/settings.py."""

from __future__ import annotations

import os
import re

import pytest

from handler.commands.cli import main
from handler.entry import service
from handler.entry.settings import SETTINGS, Context, Settings
from kit.paths import REPO

CONFIGURATION = REPO / "docs" / "configuration.md"
# The header row that starts each table, by the context its settings are declared with.
TABLES: dict[Context, str] = {
    "serve": "| flag | environment variable | default | meaning |",
    "lambda": "| environment variable | default | meaning |",
}

Documented = tuple[Context, str | None, str]  # context, flag, default


def readme_table(header: str) -> list[list[str]]:
    """The rows under ``header``, as cells; the table ends at the first line not a row."""
    lines = CONFIGURATION.read_text().splitlines()
    assert lines.count(header) == 1, f"{CONFIGURATION.name} needs one table headed {header!r}"
    rows = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def default_cell(text: str) -> str:
    """A documented default as declared: no code quotes, no trailing gloss such as "(30 days)"."""
    return re.sub(r" \([^)]*\)$", "", text.replace("`", ""))


def documented() -> dict[str, Documented]:
    """Every variable in the configuration page's tables; a cell may list several: "`A` / `B`"."""
    found: dict[str, Documented] = {}
    for context, header in TABLES.items():
        for row in readme_table(header):
            flag, env_cell, default, _ = row if context == "serve" else ["", *row]
            envs = env_cell.split(" / ")
            defaults = default.split(" / ")
            assert len(envs) == len(defaults), f"one default per variable: {row}"
            for env, value in zip(envs, defaults, strict=True):
                name = env.strip("`")
                assert name not in found, f"{name} is documented twice"
                found[name] = (context, flag.strip("`") or None, default_cell(value))
    return found


def test_readme_tables_match_the_declared_settings() -> None:
    declared = {s.env: (s.context, s.flag, s.shown_default) for s in SETTINGS}
    assert documented() == declared


def test_every_settings_field_is_declared() -> None:
    assert [s.name for s in SETTINGS] == list(Settings.__dataclass_fields__)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_serve_flags_reach_workers_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each flag given becomes its variable (what workers read), which parses back to it."""
    examples = {"store": "redis", "workers": "auto", "images_config": "{}", "animated": "webp"}
    argv: list[str] = []
    expected: dict[str, object] = {}
    for setting in SETTINGS:
        if setting.flag is None:
            continue
        if setting.is_switch:
            argv.append(setting.flag)
            expected[setting.name] = True
            continue
        raw = examples.get(setting.name, "7" if setting.parse in (int, float) else "/x")
        argv += [setting.flag, raw]
        expected[setting.name] = setting.parse(raw)
    started: list[Settings] = []

    def run(settings: Settings) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(os, "environ", {})
    monkeypatch.setattr(service, "run", run)

    assert main(["serve", *argv]) == 0
    assert set(os.environ) == {s.env for s in SETTINGS if s.flag}
    assert {name: getattr(started[0], name) for name in expected} == expected
