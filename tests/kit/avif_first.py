"""AVIF configured first, and a browser that takes it: what fast first view acts on."""

from __future__ import annotations

from handler.contract.config import load_images_config

AVIF_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
FORMATS = '{"formats": ["image/avif", "image/webp"]}'  # Next negotiates AVIF only if configured
QUERY = "url=%2Ftest.jpg&w=640&q=75"  # 800x600 source: the AVIF plans ~0.12 s
AVIF_FIRST = load_images_config(FORMATS)
