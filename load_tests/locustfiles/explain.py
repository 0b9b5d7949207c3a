"""Scenario 'explain': verification followed by its explanation streamed over SSE.

    locust -f load_tests/locustfiles/explain.py --host http://127.0.0.1:8000
"""

from load_tests.users import ExplainUser

__all__ = ["ExplainUser"]
