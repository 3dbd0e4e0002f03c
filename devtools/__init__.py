"""Tools the tests and the benches share: a Redis server, a loopback Lambda API, a fault proxy,
the e2e app's pictures, image files crafted byte by byte.

Not part of the product: neither the wheel nor the function's code holds them, and ``handler``
never imports them.
"""
