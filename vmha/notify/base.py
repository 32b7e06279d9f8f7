"""The sink driver API: where outgoing notifications go.

Sinks are loaded by stevedore from the ``vmha.notify.sinks`` entry point
namespace (``messaging``, ``masakari``, ``log``).  The outbox sender calls
``send`` for one message at a time, in order, and marks the message
delivered only when ``send`` returned.
"""

import abc


class DeliveryError(Exception):
    """The message did not get through and must be sent again later
    (broker or Masakari unreachable, 5xx, timeout)."""


class Sink(metaclass=abc.ABCMeta):
    """Delivers ``vmha.notify.message.Message`` objects somewhere.

    ``send`` returns when the destination has the message, or has
    rejected it for good (a Masakari 400 or 409: logged with the reason by
    the sink; sending it again would not change the answer).  It raises
    DeliveryError when the message should be retried.
    """

    name: str | None = None

    @abc.abstractmethod
    def send(self, message):
        """Deliver one message; raise DeliveryError to have it retried."""

    def close(self):  # noqa: B027 - optional hook, nothing to release
        """Release connections; the sink is not used afterwards."""
