"""The CPU work of a miss: hash the source, read its header (the plan), wait for a slot, transform.

Hashing and planning run on niced threads ahead of a slot (``low_priority.py``); a transform
runs once ``Admission`` grants a slot and the memory its plan needs, on niced threads or in a
child process (``isolation``). The request's variant key is made here too: it depends on the
animated options the plan uses. Free heap pages go back once transforms stop for a moment.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from handler.contract.config import ImagesConfig
from handler.model import ImageParams, Variant
from handler.pipeline import animated
from handler.pipeline.allocator import release_free_memory
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions
from handler.pipeline.low_priority import LowPriorityThreads
from handler.pipeline.transform import Plan, Transformed, plan_transform, run_transform
from handler.request.admission import Admission
from handler.request.keys import etag_of, variant_key

if TYPE_CHECKING:
    from handler.pipeline.isolation import IsolatedTransforms

IDLE_TRIM_SECONDS = 1.0  # after the last transform, how long idle before memory is trimmed
PREPARE_THREADS = 4  # hashing sources and reading their headers, ahead of a transform slot


def variant_of(result: Transformed) -> Variant:
    return Variant(result.body, result.content_type, etag_of(result.body), result.kind)


class Transforms:
    def __init__(
        self,
        config: ImagesConfig,
        admission: Admission,
        *,
        isolation: IsolatedTransforms | None = None,
        animated: AnimatedOptions = PASSTHROUGH,
        give_back_memory: bool = True,
    ) -> None:
        self.config = config
        self.admission = admission
        self.isolation = isolation
        if give_back_memory:
            admission.on_idle = self._trim_when_idle
        self._transform_threads = LowPriorityThreads(admission.max_running, "transform")
        self._prepare_threads = LowPriorityThreads(PREPARE_THREADS, "prepare")
        self._animated = animated

    def variant_key(self, source_hash: str, params: ImageParams) -> str:
        """The store key of this request's variant of the source with ``source_hash``."""
        suffix = animated.key_suffix(self._animated_for(params))
        return variant_key(
            source_hash, params.width, params.quality, params.mime_type, animated=suffix
        )

    async def sha256_hex(self, body: bytes) -> str:
        """The source's hash, off the event loop: a 5 MB photo takes ~10 ms to hash, and a
        burst of them would hold up every hit (hashlib releases the GIL while it works)."""
        return await self._prepare_threads.run(lambda: hashlib.sha256(body).hexdigest())

    async def plan(self, params: ImageParams, source: bytes) -> Plan | Transformed:
        """Read the header: what to do, and the memory it takes (or a result needing no slot)."""
        return await self._prepare_threads.run(
            lambda: plan_transform(
                source,
                width=params.width,
                quality=params.quality,
                mime_type=params.mime_type,
                config=self.config,
                animated=self._animated_for(params),
            )
        )

    async def run(
        self, plan: Plan | Transformed, deadline: float, *, background: bool = False
    ) -> Transformed:
        """Wait for a slot and the memory the plan needs, then transform.

        ``background``: nobody waits for it; visitors' transforms go first.
        """
        if not isinstance(plan, Plan):
            return plan
        slot = self.admission.slot(
            plan.memory, seconds=plan.seconds, deadline=deadline, background=background
        )
        async with slot:
            # The loop's clock is time.monotonic(), which the pipeline's deadline uses too.
            if self.isolation is not None:
                return await self.isolation.run(plan, deadline=deadline)
            return await self._transform_threads.run(
                lambda: run_transform(plan, self.config, deadline=deadline)
            )

    def _animated_for(self, params: ImageParams) -> AnimatedOptions:
        """What an animation may become for this request (its browser may take WebP or not)."""
        return animated.for_request(self._animated, params.mime_type, params.also_webp)

    def _trim_when_idle(self) -> None:
        """Give free heap pages back once the process has stayed idle for a moment: after a
        burst, not after each transform, whose pages the next one would fault in again (that
        cost ~20 ms of CPU per miss, a sixth of a WebP miss's)."""
        loop = asyncio.get_running_loop()
        loop.call_later(IDLE_TRIM_SECONDS, self._trim_if_still_idle, loop)

    def _trim_if_still_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.admission.running == 0 and self.admission.queued == 0:
            loop.run_in_executor(None, release_free_memory)
