"""The BBS HTTP API (FastAPI): routes, error mapping, body limits, SSE."""
