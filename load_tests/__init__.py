"""ServeStack load_tests."""
