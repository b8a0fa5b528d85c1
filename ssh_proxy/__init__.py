"""pydiego package."""
