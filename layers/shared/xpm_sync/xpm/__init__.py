"""Xero Practice Manager: typed records, the XML reader and the HTTP client."""
