"""Build and maintenance scripts (run as `python scripts/<name>.py`)."""
