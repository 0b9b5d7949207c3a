"""Scenario 'mixed': production-like mix of verify, enrol, hash, audit reads and explanations.

    locust -f load_tests/locustfiles/mixed.py --host http://127.0.0.1:8000
"""

from load_tests.users import MixedUser

__all__ = ["MixedUser"]
