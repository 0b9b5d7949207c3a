"""ServeStack router."""
