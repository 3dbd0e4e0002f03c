"""The request path: the coordinator and its steps (single flight, revalidation, miss, first view,
freshness), with the means they share (admission, transforms, fetch, keys, background work)."""
