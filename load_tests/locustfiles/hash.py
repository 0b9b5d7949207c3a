"""Scenario 'hash': raw hashing: /v1/hash of face or fingerprint images.

    locust -f load_tests/locustfiles/hash.py --host http://127.0.0.1:8000
"""

from load_tests.users import HashUser

__all__ = ["HashUser"]
