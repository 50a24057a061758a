"""The integration's REST API (SPEC B4, B5): models, caller identity, OAuth state and the service."""
