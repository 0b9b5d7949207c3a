"""Scenario 'enroll': onboarding: enrol new subjects with face and fingerprint.

    locust -f load_tests/locustfiles/enroll.py --host http://127.0.0.1:8000
"""

from load_tests.users import EnrollUser

__all__ = ["EnrollUser"]
