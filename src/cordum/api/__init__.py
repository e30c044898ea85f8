"""The HTTP API: FastAPI routers that map requests to the services."""

from cordum.api.app import create_app

__all__ = ["create_app"]
