"""The Lambda tests' S3 (moto's server): the prefix the assets are seeded under, and the keys
in a bucket."""

from __future__ import annotations

from handler.stores.s3_client import s3_client

ASSETS_PREFIX = "_assets/"


def objects(bucket: str, under: str) -> list[str]:
    listed = s3_client().list_objects_v2(Bucket=bucket, Prefix=under)
    return sorted(item["Key"] for item in listed.get("Contents", []))
