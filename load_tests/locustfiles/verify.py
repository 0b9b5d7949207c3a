"""Scenario 'verify': verify-heavy: Zipf-drawn subjects verify (30 % multimodal), some audit reads.

    locust -f load_tests/locustfiles/verify.py --host http://127.0.0.1:8000
"""

from load_tests.users import VerifyUser

__all__ = ["VerifyUser"]
