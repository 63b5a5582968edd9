"""Pydantic models at the HTTP edge: one module per model family, named as the services name them."""
