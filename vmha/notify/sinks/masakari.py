"""The ``masakari`` sink: failures straight to Masakari's API (direct mode).

For deployments without the message bus path (or beside it).  Only
``instance.failure`` notifications whose (event, vir_domain_event) pair
Masakari's engine recovers are sent; every other notification is delivered
by doing nothing (logged at DEBUG or INFO), because Masakari would not act
on it.
"""

from vmha import masakari
from vmha.masakari import client as masakari_client
from vmha.notify import base


class MasakariSink(base.Sink):
    """Sends failures with ``MasakariClient`` (``[masakari]`` options).

    ``send`` returns when Masakari accepted the failure (202), rejected it
    for good (400: host not in a segment; 409: duplicate or host under
    maintenance; logged with Masakari's reason), or when there was nothing
    to send (another event type, a pair Masakari does not recover, a
    malformed payload: logged).  It raises ``DeliveryError`` when Masakari
    could not be reached or answered 5xx even after the client's
    ``[masakari] retry_max`` retries; the outbox sends it again later.
    """

    name = 'masakari'

    def __init__(self, conf, transport=None, client=None):
        self._client = client or masakari_client.MasakariClient.from_conf(conf)

    def send(self, message):
        try:
            masakari.forward(self._client, message.message_id,
                             message.event_type, message.payload)
        except masakari_client.MasakariUnavailable as error:
            raise base.DeliveryError(
                'notification %s not delivered to Masakari: %s'
                % (message.message_id, error)) from error
