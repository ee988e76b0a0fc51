"""The SDK's remote mode: the same calls, sent to a Shipway server named by ``SHIPWAY_URI``."""

from shipway.client.mode import remote_client, remote_uri

__all__ = ["remote_client", "remote_uri"]
