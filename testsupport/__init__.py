"""What the tests and the benchmarks share: the whole stack on free ports, stand-ins for the services' peers and
for Slack, Monday.com and SMTP, private PostgreSQL schemas and Redis prefixes, polling.

Nothing under services/, gateway/ or deploy/ imports it: production code never depends on test code.
"""
