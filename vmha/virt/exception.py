"""Errors the virt layer raises; callers never see a libvirt exception."""


class HypervisorError(Exception):
    """A hypervisor call failed.  ``code`` is libvirt's error code, if any."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class ConnectionFailed(HypervisorError):
    """The hypervisor connection could not be opened."""


class HypervisorUnavailable(HypervisorError):
    """There is no usable connection right now (it is being re-opened)."""


class NotSupported(HypervisorError):
    """The connection's driver does not implement this call.

    ``test:///default`` answers this for keepalive and guest-agent
    commands: a missing capability, not a failure of the domain.
    """


class DomainNotFound(HypervisorError):
    """No domain has this UUID (any more)."""


class AgentError(HypervisorError):
    """The guest agent did not answer, or answered with an error."""


class AgentTimeout(AgentError):
    """The guest agent did not answer within the timeout."""
