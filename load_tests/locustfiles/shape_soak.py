"""Load shape 'soak' (load_tests.shapes.Soak); add it after a scenario's locustfile with -f."""

from load_tests.shapes import Soak

__all__ = ["Soak"]
