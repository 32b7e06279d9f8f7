"""Policy: services and monitors that turn events into decisions."""
