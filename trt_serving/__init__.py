"""ServeStack trt_serving."""
