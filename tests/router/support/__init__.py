"""Helpers of the router tests: fake pods behind real sockets, an in-process router, a PostgreSQL server."""
