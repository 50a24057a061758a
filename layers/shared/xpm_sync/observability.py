"""Powertools objects shared by every layer, so lower layers never import from handlers."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="xpm-sync")
tracer = Tracer(service="xpm-sync")
metrics = Metrics(namespace="XpmSync", service="xpm-sync")
