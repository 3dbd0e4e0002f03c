"""One byte format for stored records, shared by the filesystem and S3 stores."""

from __future__ import annotations

import json
from dataclasses import asdict

from handler.model import Pointer, Variant


def encode_pointer(pointer: Pointer) -> bytes:
    return json.dumps(asdict(pointer), separators=(",", ":")).encode()


def decode_pointer(data: bytes) -> Pointer | None:
    """A record we cannot read is a miss, never an error: the source is simply fetched again."""
    try:
        return Pointer(**json.loads(data))
    except (ValueError, TypeError):
        return None


def encode_variant(variant: Variant) -> bytes:
    """A one-line JSON header, a newline, then the body: a single file cannot be half a pair."""
    header = {"content_type": variant.content_type, "etag": variant.etag, "kind": variant.kind}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + variant.body


def decode_variant(data: bytes) -> Variant | None:
    header, sep, body = data.partition(b"\n")
    if not sep or not body:
        return None
    try:
        meta = json.loads(header)
        return Variant(
            body=body, content_type=meta["content_type"], etag=meta["etag"], kind=meta["kind"]
        )
    except (ValueError, KeyError, TypeError):
        return None
