"""Scenario 'labelled': genuine and impostor probes with known truth, outcomes posted back.

    locust -f load_tests/locustfiles/labelled.py --host http://127.0.0.1:8000
"""

from load_tests.users import LabelledUser

__all__ = ["LabelledUser"]
