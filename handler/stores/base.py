"""Records and the store interface every backend implements.

Three kinds of record: a *pointer* per source URL, immutable *variants* and kept *source* bytes
(what each holds, and where each store keeps it: docs/architecture.md, "Store records")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from handler.model import Pointer, Variant


class Store(Protocol):
    """Blocking calls; the optimizer runs them off the event loop (unless the store says it is
    ``in_process``: then they are plain memory operations, cheaper than a thread hop)."""

    def get_pointer(self, key: str) -> Pointer | None: ...

    def put_pointer(self, key: str, pointer: Pointer) -> None: ...

    def get_variant(self, key: str) -> Variant | None: ...

    def put_variant(self, key: str, variant: Variant) -> None: ...

    def get_source(self, key: str) -> bytes | None:
        """The source bytes whose sha256 is ``key`` (the caller checks them), or None."""
        ...

    def put_source(self, key: str, body: bytes) -> None:
        """Keep ``body`` under its hash, with the same expiry as variants."""
        ...

    def ping(self) -> None:
        """Raise if the store cannot answer now (readiness)."""
        ...


@runtime_checkable
class Locking(Protocol):
    """Optional: a store shared by processes or hosts can let one of them lead a miss.

    With it, identical misses on different processes share one fetch and transform; without it,
    only those within one process do. A lock is held at most ``ttl_ms``, so a holder that dies
    never blocks the others for long.
    """

    def try_lock(self, key: str, ttl_ms: int) -> str | None:
        """A token if the lock was free and is now ours; None while another holds it."""
        ...

    def unlock(self, key: str, token: str) -> None:
        """Release the lock if ``token`` still holds it; one that expired and was taken since is
        left to its new holder."""
        ...


@runtime_checkable
class Purging(Protocol):
    """Optional: pointers can be removed (``next-image purge``), so the next request for their
    URLs re-checks the source. Variants and kept sources stay: content-addressed, still valid.

    Each returns how many of the pointers existed, or None when the store cannot tell (S3's
    DeleteObjects answers alike for a key that was there and one that was not).
    """

    def delete_pointers(self, keys: Sequence[str]) -> int | None: ...

    def delete_all_pointers(self) -> int | None: ...
