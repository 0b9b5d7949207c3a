"""ServeStack llm_serving."""
