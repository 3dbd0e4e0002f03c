"""Images configs the tests use again and again."""

from __future__ import annotations

import json
from typing import Any

from handler.contract.config import ImagesConfig, load_images_config
from kit.support import Upstream


def remote_config(upstream: Upstream, **images: Any) -> ImagesConfig:
    pattern = {"protocol": "http", "hostname": "127.0.0.1", "port": str(upstream.port)}
    return load_images_config(
        json.dumps(
            {
                "remotePatterns": [pattern],
                "dangerouslyAllowLocalIP": True,
                "minimumCacheTTL": 5,
                **images,
            }
        )
    )
