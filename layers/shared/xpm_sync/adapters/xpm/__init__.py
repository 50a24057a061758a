"""XPM API v3.1 (SPEC A8): the HTTP client, the streaming XML reader and the call budget."""
