"""The control-plane REST API."""

from shipway.server.app import create_app

__all__ = ["create_app"]
