"""Locustfiles: one per scenario (the users) and one per load shape.

Combine a scenario with a shape by giving Locust both files:

    locust -f load_tests/locustfiles/mixed.py,load_tests/locustfiles/shape_spike.py --headless ...

Locust uses every non-abstract User class and the (single) LoadTestShape it finds in the files
it is given, so each file imports exactly one thing. `servestack loadtest` builds this list.
"""
