"""Everything that talks to the outside: DynamoDB, Secrets Manager, SQS, SES, CloudWatch, Xero and XPM.

Each adapter takes its client (botocore, httpx or a ``dynamodb.Table``) as a parameter; the
composition root (``xpm_sync.composition``) builds them from a function's settings.
"""
