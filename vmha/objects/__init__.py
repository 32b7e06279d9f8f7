"""Versioned objects and notification payloads (see the notifications issue)."""
