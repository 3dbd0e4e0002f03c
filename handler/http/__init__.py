"""The HTTP layer: the FastAPI app, replayed hits, probes, OpenAPI, metrics and logs."""
