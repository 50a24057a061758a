"""Active: the practice platform's records and their DynamoDB repository."""
