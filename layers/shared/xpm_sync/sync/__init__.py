"""The sync: planning and running one firm's run."""
