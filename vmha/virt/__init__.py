"""Hypervisor-facing code: no policy, no messaging, no database."""
