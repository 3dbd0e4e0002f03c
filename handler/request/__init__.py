"""The request path: the coordinator and its steps (admission, keys, first view)."""
