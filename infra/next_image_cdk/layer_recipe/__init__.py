"""The layer recipe, shipped as data: ``build_layer.py`` and its pins, from ``layers/``."""
