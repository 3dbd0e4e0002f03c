"""The store registry is the one list of backends: the settings' choices, the builders, the
contract suite's parameters all follow it."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from handler.entry.settings import SETTINGS, Settings
from handler.entry.wiring import build_store
from handler.stores import registry

TESTS = Path(__file__).resolve().parents[1]


def test_the_store_setting_accepts_the_registrys_names() -> None:
    (store,) = (setting for setting in SETTINGS if setting.name == "store")
    assert store.choices == registry.NAMES
    assert {"memory", "filesystem", "s3", "redis"} <= set(registry.NAMES)
    assert store.default in registry.NAMES


def test_the_options_are_settings() -> None:
    """``build_store`` fills each option from the setting of its name."""
    names = {setting.name for setting in SETTINGS}
    assert {field.name for field in fields(registry.StoreOptions)} <= names


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no store named 'tape'"):
        build_store(Settings(store="tape"))


def test_the_contract_suite_runs_against_every_store() -> None:
    """``test_stores.py``'s ``contract`` fixture has a parameter for each registered store (and
    may have more: the filesystem store with and without its tier)."""
    (path,) = TESTS.rglob("test_stores.py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "contract":
            (decorator,) = node.decorator_list
            assert isinstance(decorator, ast.Call)
            (params,) = (k.value for k in decorator.keywords if k.arg == "params")
            assert set(registry.NAMES) <= set(ast.literal_eval(params))
            return
    raise AssertionError(f"{path} has no contract fixture")
