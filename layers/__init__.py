"""Lambda layers: ``layers.build_layer`` builds them, ``layers.check_layer`` proves them."""
