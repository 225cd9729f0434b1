"""The notifier: every outbound Slack alert, Monday.com item and email, delivered once, through breakers and a DLQ."""
