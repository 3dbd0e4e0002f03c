"""Fast first view on Lambda: the deferred AVIF is asked of this same function, asynchronously.

Work started in an invocation does not survive its response (the process is frozen), so the AVIF
a fast first view put off is produced by an asynchronous invocation of the function itself
(``InvocationType=Event``): Lambda queues the event and runs it as another invocation, which
serves the request in full and stores the variant. The construct grants the function
``lambda:InvokeFunction`` on itself. A failed call is the optimizer's to log; the next request
for the AVIF defers it again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio

from handler.model import ImageParams

PRODUCE = "nextImageProduce"  # the event's one key; no HTTP event (Function URL, ALB...) has it


def produce_event(params: ImageParams) -> dict[str, Any]:
    return {PRODUCE: dataclasses.asdict(params)}


def params_to_produce(event: dict[str, Any]) -> ImageParams | None:
    """The request a produce event asks for, or None for any other event.

    Raises ValueError for a produce event that does not hold a request.
    """
    body = event.get(PRODUCE)
    if body is None:
        return None
    try:
        return ImageParams(**body)
    except TypeError as exc:
        raise ValueError(f"not a {PRODUCE} event: {exc}") from None


class SelfInvoker:
    """Queues a produce event for the running function; tight timeouts (it runs inside a request).

    The running version (``AWS_LAMBDA_FUNCTION_VERSION``) is invoked, not ``$LATEST``: the same
    code, with its SnapStart snapshot.
    """

    def __init__(self, function_name: str, version: str | None = None) -> None:
        self.function_name = function_name
        self.qualifier = {"Qualifier": version} if version and version != "$LATEST" else {}
        self._client: Any = None

    async def __call__(self, params: ImageParams) -> None:
        payload = json.dumps(produce_event(params)).encode()
        await anyio.to_thread.run_sync(lambda: self._invoke(payload), abandon_on_cancel=True)

    def _invoke(self, payload: bytes) -> None:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2})
            self._client = boto3.client("lambda", config=config)
        self._client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=payload,
            **self.qualifier,
        )
