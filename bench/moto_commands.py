"""What the bench says to its moto server process on stdin, and what it answers on stdout."""

SETTLE_COMMAND = "settle"  # collect the garbage, then freeze every object moto holds
SETTLED_ANSWER = "SETTLED"
