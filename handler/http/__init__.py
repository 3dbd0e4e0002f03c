"""The HTTP layer: the FastAPI app, ready-made hits, probes, OpenAPI, metrics and logs."""
