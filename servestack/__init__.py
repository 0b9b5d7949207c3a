"""ServeStack servestack."""
