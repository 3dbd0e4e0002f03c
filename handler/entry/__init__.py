"""The entry points: Lambda, the service and the composition root that wires them."""
