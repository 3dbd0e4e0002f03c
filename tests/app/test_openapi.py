"""FastAPI around the route: its OpenAPI description, docs only on request, never a JSON error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from handler.commands.cli import main
from handler.commands.invoke import response_body, response_headers
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from kit.lambda_events import function_url, invoke

IMAGE_PATH = "/_next/image"


@pytest.fixture
def client(public_dir: Path) -> TestClient:
    return TestClient(build_app(Settings(public_dir=str(public_dir))))


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/", 404, "Not Found"),
        ("GET", "/nope?url=/test.png&w=640&q=75", 404, "Not Found"),
        ("GET", "/openapi.json", 404, "Not Found"),
        ("GET", "/docs", 404, "Not Found"),
        ("POST", "/_next/imagex", 404, "Not Found"),
        ("PUT", IMAGE_PATH + "?url=/test.png&w=640&q=75", 405, "Method Not Allowed"),
        ("DELETE", IMAGE_PATH, 405, "Method Not Allowed"),
        ("PATCH", IMAGE_PATH + "/", 405, "Method Not Allowed"),
    ],
)
def test_unknown_paths_and_methods_are_plain_text(
    client: TestClient, method: str, path: str, status: int, body: str
) -> None:
    response = client.request(method, path)
    assert (response.status_code, response.text) == (status, body)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    if status == 405:
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


@pytest.mark.parametrize(
    "query",
    ["", "url=/test.png", "url=/test.png&w=abc&q=75", "url=/test.png&w=640&q=75&w=1", "w=%ZZ"],
)
def test_bad_queries_answer_nexts_text_never_a_422(client: TestClient, query: str) -> None:
    response = client.post(f"{IMAGE_PATH}?{query}", json={"unexpected": "body"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text.startswith('"')  # one of Next's messages, e.g. "url" parameter ...


def test_docs_are_served_only_when_asked(public_dir: Path) -> None:
    client = TestClient(build_app(Settings(public_dir=str(public_dir)), docs=True))
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert list(schema["paths"]) == [IMAGE_PATH]
    image = client.get(f"{IMAGE_PATH}?url=/test.png&w=640&q=75", headers={"accept": "image/webp"})
    assert image.headers["content-type"] == "image/webp"  # the route itself is unchanged


def test_the_schema_documents_parameters_negotiation_and_every_status(public_dir: Path) -> None:
    config = json.dumps({"formats": ["image/avif", "image/webp"], "qualities": [50, 75]})
    app = build_app(Settings(public_dir=str(public_dir), images_config=config), docs=True)
    operation = app.openapi()["paths"][IMAGE_PATH]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert list(params) == ["url", "w", "q", "Accept", "If-None-Match"]
    assert all(params[name]["required"] for name in ("url", "w", "q"))
    assert "640, 750, 828, 1080, 1200, 1920, 2048, 3840, 32, 48" in params["w"]["description"]
    assert "one of 50, 75" in params["q"]["description"]
    assert "image/avif, image/webp" in params["Accept"]["description"]
    responses = operation["responses"]
    assert sorted(responses) == sorted(
        ["200", "302", "304", "308", "400", "404", "413", "502", "503", "504", "508"]
    )
    assert {"image/avif", "image/webp", "image/jpeg"} <= set(responses["200"]["content"])
    for status in ("400", "404", "413", "502", "503", "504", "508"):
        assert list(responses[status]["content"]) == ["text/plain"]
    assert "Retry-After" in responses["503"]["description"]


def test_openapi_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi", "--config", '{"formats": ["image/avif"]}']) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["info"]["title"] == "next-image"
    accept = schema["paths"][IMAGE_PATH]["get"]["parameters"][3]
    assert "(image/avif)" in accept["description"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_lambda_never_serves_docs(public_dir: Path, path: str) -> None:
    event = function_url("GET", "", {})
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    response = invoke(Settings(public_dir=str(public_dir)), event)
    assert response["statusCode"] == 404
    assert response_body(response) == b"Not Found"
    assert response_headers(response)["content-type"] == "text/plain; charset=utf-8"
