"""A/B experiment reports: pure statistics, an HTML page with inline SVG charts, and endpoints."""
