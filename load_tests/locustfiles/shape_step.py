"""Load shape 'step' (load_tests.shapes.StepLoad); add it after a scenario's locustfile with -f."""

from load_tests.shapes import StepLoad

__all__ = ["StepLoad"]
