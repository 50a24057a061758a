"""xpm-sync domain: XPM staff and clients into Active, one firm at a time."""
