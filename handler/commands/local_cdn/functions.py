"""Viewer-request CloudFront Functions, run for real by one long-lived Node.js child process.

The function code is the template's ``FunctionCode``, evaluated in a ``vm`` context with what the
``cloudfront-js-2.0`` runtime offers (``crypto``, ``querystring`` and ``buffer`` modules,
``Buffer``, ``TextEncoder``/``TextDecoder``, ``atob``/``btoa``, ``console``). Requests go to the
child as JSON lines on stdin and answers come back on stdout, so a call costs a round trip, not a
process start. Event and result shapes follow AWS's CloudFront Developer Guide ("CloudFront
Functions event structure"), including how ``multiValue`` edits are applied.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from handler.commands.local_cdn.http import Pairs, Response, ViewerRequest, parse_cookies
from handler.commands.local_cdn.intrinsics import Unsupported
from handler.commands.local_cdn.template import ViewerFunction

# A runaway guard only: CloudFront's real limit is compute utilisation, not measurable here.
TIMEOUT_MS = 1000

RUNNER = r"""
'use strict';
const vm = require('vm');
const readline = require('readline');
const MODULES = { crypto: require('crypto'), querystring: require('querystring'),
                  buffer: require('buffer') };
const TIMEOUT = Number(process.argv[1]);
const contexts = new Map();
process.title = 'local-cdn-functions';
process.on('SIGINT', () => {});  // the parent stops us by closing stdin

function load(name, code) {
  const source = code.replace(
    /^[ \t]*import\s+(\w+)\s+from\s+['"](\w+)['"];?/gm, 'var $1 = require("$2");');
  const log = (...args) => process.stderr.write(`[${name}] ${args.join(' ')}\n`);
  const context = vm.createContext({
    console: { log, info: log, warn: log, error: log, debug: log },
    require: (module) => {
      if (module in MODULES) return MODULES[module];
      throw new Error(`module '${module}' is not available in cloudfront-js-2.0`);
    },
    Buffer, TextEncoder, TextDecoder, atob, btoa,
  });
  vm.runInContext(source, context, { filename: name, timeout: TIMEOUT });
  if (typeof context.handler !== 'function') throw new Error('no handler function defined');
  contexts.set(name, context);
}

async function run(name, event) {
  const context = contexts.get(name);
  context.__event = event;
  return await vm.runInContext('handler(__event)', context, { timeout: TIMEOUT });
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const message = JSON.parse(line);
  let answer;
  try {
    const result = message.op === 'load' ? load(message.name, message.code)
                                         : await run(message.name, message.event);
    answer = { id: message.id, ok: true, result: result === undefined ? null : result };
  } catch (error) {
    answer = { id: message.id, ok: false, error: String(error && error.stack || error) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
});
"""


class FunctionError(Exception):
    """The function threw, ran too long, or returned something CloudFront would reject."""


class NodeFunctions:
    """The Node.js child holding every viewer-request function of the distribution."""

    def __init__(self, functions: Iterable[ViewerFunction], node: str | None = None) -> None:
        executable = node or shutil.which("node")
        if executable is None:
            raise Unsupported("Node.js (node on PATH) is needed to run CloudFront Functions")
        self._process = subprocess.Popen(
            [executable, "-e", RUNNER, str(TIMEOUT_MS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self._lock = threading.Lock()
        self._ids = itertools.count()
        try:
            for function in functions:
                try:
                    self._call({"op": "load", "name": function.name, "code": function.code})
                except FunctionError as exc:
                    raise Unsupported(f"{function.name}: the code does not load: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def run(self, name: str, event: Mapping[str, Any]) -> Any:
        """The handler's return value (its promise awaited), as JSON."""
        return self._call({"op": "run", "name": name, "event": event})

    def _call(self, message: dict[str, Any]) -> Any:
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None
            message["id"] = next(self._ids)
            try:
                stdin.write(json.dumps(message) + "\n")
                stdin.flush()
                line = stdout.readline()
            except (BrokenPipeError, ValueError) as exc:
                raise FunctionError("the Node.js process is gone") from exc
            if not line:
                raise FunctionError(f"the Node.js process exited ({self._process.poll()})")
            answer = json.loads(line)
        if not answer["ok"]:
            raise FunctionError(answer["error"])
        return answer["result"]

    def close(self) -> None:
        """Closing stdin ends the child; it is killed if it does not go within a second."""
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> NodeFunctions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fields(pairs: Pairs) -> dict[str, Any]:
    """``[(name, value)]`` as the event's ``{name: {value, multiValue?}}``."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    fields: dict[str, Any] = {}
    for name, values in grouped.items():
        fields[name] = {"value": values[0]}
        if len(values) > 1:
            fields[name]["multiValue"] = [{"value": v} for v in values]
    return fields


def viewer_request_event(
    request: ViewerRequest, *, domain: str, distribution_id: str, request_id: str
) -> dict[str, Any]:
    return {
        "version": "1.0",
        "context": {
            "distributionDomainName": domain,
            "distributionId": distribution_id,
            "eventType": "viewer-request",
            "requestId": request_id,
        },
        "viewer": {"ip": request.client_ip},
        "request": {
            "method": request.method,
            "uri": request.uri,
            "querystring": _fields(request.query),
            "headers": _fields(request.headers),
            "cookies": _fields(request.cookies),
        },
    }


def _pairs(fields: Any, before: Mapping[str, Any], what: str, lower: bool = False) -> Pairs:
    """Back to pairs: a changed ``multiValue`` wins; otherwise ``value`` replaces the first
    value and any further ones stay."""
    if not isinstance(fields, Mapping):
        raise FunctionError(f"{what} is not an object")
    pairs: Pairs = []
    for name, field in fields.items():
        if not isinstance(field, Mapping) or "value" not in field:
            raise FunctionError(f"{what}.{name} has no value")
        key = name.lower() if lower else name
        multi = field.get("multiValue")
        rest: list[str] = []
        if multi is not None:
            values = [str(item["value"]) for item in multi]
            if multi != before.get(name, {}).get("multiValue"):
                pairs += [(key, v) for v in values]
                continue
            rest = values[1:]
        pairs.append((key, str(field["value"])))
        pairs += [(key, v) for v in rest]
    return pairs


def _body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, Mapping):
        data = str(body.get("data", ""))
        if body.get("encoding") == "base64":
            try:
                return base64.b64decode(data, validate=True)
            except ValueError as exc:
                raise FunctionError("body.data is not valid base64") from exc
        return data.encode()
    raise FunctionError("body is neither a string nor {data, encoding}")


def _response(result: Mapping[str, Any]) -> Response:
    status = result["statusCode"]
    if not isinstance(status, int):
        raise FunctionError("statusCode is not an integer")
    headers = _pairs(result.get("headers") or {}, {}, "headers", lower=True)
    for name, cookie in (result.get("cookies") or {}).items():
        attributes = cookie.get("attributes")
        value = f"{name}={cookie.get('value', '')}" + (f"; {attributes}" if attributes else "")
        headers.append(("set-cookie", value))
    return Response(status, headers, _body(result.get("body")))


def apply_result(
    result: Any, request: ViewerRequest, event: Mapping[str, Any]
) -> ViewerRequest | Response:
    """The request to carry on with, or the response the function generated."""
    if not isinstance(result, Mapping):
        raise FunctionError("the handler returned neither a request nor a response")
    if "statusCode" in result:
        return _response(result)
    before = event["request"]
    if result.get("method", request.method) != request.method:
        raise FunctionError("the request method is read-only")
    uri = result.get("uri")
    if not isinstance(uri, str) or not uri.startswith("/"):
        raise FunctionError("uri must be a string starting with /")
    headers = _pairs(result.get("headers") or {}, before["headers"], "headers", lower=True)
    # A Cookie header the function adds is cookies, as CloudFront keeps them apart.
    cookies = _pairs(result.get("cookies") or {}, before["cookies"], "cookies")
    cookies += parse_cookies(headers)
    return replace(
        request,
        uri=uri,
        query=_pairs(result.get("querystring") or {}, before["querystring"], "querystring"),
        headers=[(n, v) for n, v in headers if n != "cookie"],
        cookies=cookies,
    )
