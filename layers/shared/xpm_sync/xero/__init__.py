"""Xero's identity service: OAuth 2.0 for the firm's connection and its Practice Manager tenants."""
