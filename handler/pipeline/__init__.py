"""The pure image pipeline on libvips: plan, transform, encoders, sniffing, isolation."""
