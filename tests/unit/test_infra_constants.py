"""The construct's copies of the handler's constants are the handler's.

``infra/next_image_cdk`` ships the handler as data and never imports it, so it states what it
needs again: the formats a config may list, the bucket's key prefixes, the CSP, the function's
entry point and environment. Each copy is checked against the handler's here. The construct's
values are read from its source (top-level literals), not imported: no CDK, no jsii, no node.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

from handler.contract.config import DEFAULT_CSP, ImagesConfig
from handler.entry.settings import SETTINGS, Settings
from handler.formats import NEGOTIABLE
from handler.pipeline.animated import MODES
from handler.stores import registry, s3

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "next_image_cdk"


def source(module: str) -> str:
    return (INFRA / f"{module}.py").read_text()


def constants(module: str) -> dict[str, Any]:
    """An infra module's top-level constants whose values are literals."""
    found: dict[str, Any] = {}
    for node in ast.parse(source(module)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                continue  # computed (a Path, a Duration): not a copy of the handler's
    return found


def props_field(name: str) -> ast.AnnAssign:
    """A field of ``NextImageOptimizerProps``, as declared."""
    for node in ast.walk(ast.parse(source("construct"))):
        if isinstance(node, ast.ClassDef) and node.name == "NextImageOptimizerProps":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and ast.unparse(item.target) == name:
                    return item
    raise AssertionError(f"NextImageOptimizerProps has no {name}")


CONSTRUCT = constants("construct")


def test_the_constants_are_read() -> None:
    assert {"VARIANTS", "POINTERS", "SOURCES", "DEFAULT_CSP", "HANDLER"} <= CONSTRUCT.keys()
    assert {"NEXT_FORMATS", "DEFAULT_FORMATS"} <= constants("bundled_config").keys()


def test_formats_are_the_handlers() -> None:
    """What the construct lets ``images.formats`` list, and its default, are the config's."""
    bundled = constants("bundled_config")
    assert bundled["NEXT_FORMATS"] == NEGOTIABLE
    assert bundled["DEFAULT_FORMATS"] == ImagesConfig().formats


def test_key_prefixes_are_the_s3_stores() -> None:
    """The bucket's prefixes (lifecycle rules, grants, the variants behaviour) are where the S3
    store writes."""
    assert (CONSTRUCT["VARIANTS"], CONSTRUCT["POINTERS"], CONSTRUCT["SOURCES"]) == (
        s3.VARIANTS,
        s3.POINTERS,
        s3.SOURCES,
    )
    assert CONSTRUCT["VARIANTS_PATH"] == "/" + s3.VARIANTS + "*"


def test_csp_and_image_path_are_the_configs() -> None:
    assert CONSTRUCT["DEFAULT_CSP"] == DEFAULT_CSP
    assert CONSTRUCT["IMAGE_PATH"] == ImagesConfig().extra["path"]


def test_transient_errors_are_the_apps() -> None:
    """The statuses CloudFront keeps for a second are those the app marks ``no-store``."""
    from handler.http.app import TRANSIENT_ERRORS

    assert set(CONSTRUCT["TRANSIENT_ERRORS"]) == TRANSIENT_ERRORS


def test_the_function_entry_point_exists() -> None:
    """``HANDLER`` names a module of the handler and a name it defines (read, not imported: the
    module builds the app)."""
    module, _, name = CONSTRUCT["HANDLER"].rpartition(".")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    defined: set[str] = set()
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.FunctionDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert name in defined


def test_the_local_cdn_mounts_the_code_where_lambda_does() -> None:
    from handler.commands.local_cdn.template import TASK_ROOT

    assert CONSTRUCT["TASK_ROOT"] == TASK_ROOT


def test_the_functions_environment_names_settings() -> None:
    """Every ``NEXT_IMAGE_*`` variable the construct sets is a setting's, with a valid value
    where it is a constant."""
    construct = source("construct")
    named = set(re.findall(r'"(NEXT_IMAGE_[A-Z_]+)"', construct))
    named.add(constants("redeploy")["GENERATION_ENV"])
    assert {"NEXT_IMAGE_STORE", "NEXT_IMAGE_BUCKET", "NEXT_IMAGE_DEPLOY_GENERATION"} <= named
    assert named <= {setting.env for setting in SETTINGS}
    store = re.search(r'"NEXT_IMAGE_STORE": "([a-z0-9]+)"', construct)
    assert store is not None and store.group(1) in registry.NAMES


def test_animated_modes_are_the_handlers() -> None:
    annotation = props_field("animated").annotation
    assert isinstance(annotation, ast.Subscript)
    assert ast.unparse(annotation.value) == "Literal"
    assert tuple(ast.literal_eval(annotation.slice)) == MODES


def test_variant_expiry_is_the_redis_stores_ttl() -> None:
    """The S3 lifecycle's expiry and the Redis store's TTL are one policy: 30 days."""
    days = props_field("variant_expiry_days").value
    assert days is not None
    assert ast.literal_eval(days) * 24 * 3600 == Settings().variant_ttl
