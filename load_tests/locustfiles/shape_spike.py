"""Load shape 'spike' (load_tests.shapes.Spike); add it after a scenario's locustfile with -f."""

from load_tests.shapes import Spike

__all__ = ["Spike"]
