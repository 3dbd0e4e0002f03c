"""Tools the tests and the benches share: a Redis server, a loopback Lambda API, a fault proxy.

Not part of the product: neither the wheel nor the function's code holds them, and ``handler``
never imports them.
"""
