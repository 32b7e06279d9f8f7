"""The ``messaging`` sink: notifications onto the oslo.messaging bus."""

import logging

import oslo_messaging
from oslo_messaging.notify import dispatcher as notify_dispatcher

from vmha.notify import base

LOG = logging.getLogger(__name__)

#: The version oslo.messaging's messagingv2 driver passes: the amqp drivers
#: then wrap the message in the ``oslo.version``/``oslo.message`` envelope.
ENVELOPE_VERSION = 2.0


class MessagingSink(base.Sink):
    """Sends notifications to ``[notifications] topics`` as messagingv2 does.

    A consumer cannot tell these messages from an oslo.messaging Notifier's
    with the ``messagingv2`` driver: the same target (``<topic>.<priority
    in lower case>``, e.g. ``versioned_notifications.error``), the same
    message (``message_id``, ``publisher_id``, ``event_type``,
    ``priority``, ``payload``, ``timestamp``), the same 2.0 envelope, an
    empty context.  A NotificationListener hands the endpoint our
    ``message_id`` in ``metadata['message_id']``.

    Why not a ``Notifier``: it never tells whether a message went out.
    ``Notifier._notify`` and ``MessagingDriver.notify`` both catch and log
    every exception, and with the default ``retry=None`` the rabbit driver
    reconnects forever inside the call, so the outbox could neither mark a
    message delivered nor give up on it.  It also draws a fresh
    ``message_id`` for each call, so a resent message could not be
    recognised as the same one.

    So this sink does the one thing the messagingv2 driver does, itself:
    ``transport._send_notification(target, ctxt, message, version=2.0,
    retry=N)``, with the Message's own fields (its ``message_id`` stays
    the same across resends, so consumers deduplicate) and ``retry =
    [notifications] send_retry``.  That call returns only when the driver
    has handed the message over, and raises otherwise; with RabbitMQ the
    publish waits for the broker's publisher confirm (the rabbit driver
    connects with ``confirm_publish``), and messages are persistent.  Any
    exception becomes ``DeliveryError`` and the outbox sends the message
    again later.  ``_send_notification`` is the private seam the
    messagingv2 driver itself uses; tests pin its behaviour.

    What "sent" does not cover: queues that are not durable lose waiting
    messages on a broker restart, so set ``[oslo_messaging_rabbit]
    amqp_durable_queues = true`` (or quorum queues) on vmha and on every
    consumer.  With several topics, a failure after the first topic got
    the message makes the whole send fail and all topics get it again:
    consumers see the same ``message_id`` twice and drop the second.  The
    kafka driver sends in the background and cannot give this guarantee.
    """

    name = 'messaging'

    def __init__(self, conf, transport=None):
        self._topics = list(conf.notifications.topics)
        if not self._topics:
            raise ValueError('[notifications] topics is empty: the '
                             'messaging sink has nowhere to send')
        self._retry = conf.notifications.send_retry
        self._default_publisher = 'vmha-agent:%s' % conf.host
        self._owns_transport = transport is None
        if transport is None:
            transport = oslo_messaging.get_notification_transport(conf)
        self._transport = transport

    def envelope(self, message):
        """The message as the messagingv2 driver puts it on the bus."""
        return {
            'message_id': message.message_id,
            'publisher_id': message.publisher_id or self._default_publisher,
            'event_type': message.event_type,
            'priority': message.priority.upper(),
            'payload': message.payload,
            'timestamp': message.timestamp,
        }

    def send(self, message):
        priority = message.priority.lower()
        if priority not in notify_dispatcher.PRIORITIES:
            raise ValueError('notification %s has priority %r; oslo.messaging '
                             'knows %s' % (message.message_id,
                                           message.priority,
                                           ', '.join(
                                               notify_dispatcher.PRIORITIES)))
        for topic in self._topics:
            target = oslo_messaging.Target(topic='%s.%s' % (topic, priority))
            try:
                # A fresh dict each time: the amqp driver adds its own
                # keys (_unique_id) to the message it is given.
                self._transport._send_notification(
                    target, {}, self.envelope(message),
                    version=ENVELOPE_VERSION, retry=self._retry)
            except Exception as error:
                raise base.DeliveryError(
                    'notification %s (%s) not sent to %s: %s: %s' % (
                        message.message_id, message.event_type,
                        target.topic, type(error).__name__, error)
                ) from error
        LOG.debug('Sent notification %s (%s) to %s', message.message_id,
                  message.event_type, ', '.join(self._topics))

    def close(self):
        if self._owns_transport:
            self._transport.cleanup()
