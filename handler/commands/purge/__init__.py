"""``next-image purge``: forget some image URLs (or all) so their next request re-checks the
source, and invalidate them at CloudFront. Never part of the function's code (``handler/``)."""
