"""vmha-masakari-bridge: failures from the message bus to Masakari.

Masakari reads nothing from oslo.messaging, so on the controller side the
bridge listens to vmha's notifications (``[notifications] topics``, ERROR
priority) and POSTs each failure Masakari recovers to its API
(``endpoint.MasakariEndpoint``).  Every copy of the bridge consumes in the
same listener pool (``[bridge] pool``), so copies share the work and a
notification is acknowledged only once Masakari has taken or refused it
(``allow_requeue``).  The bridge always runs on native threads.
"""

import oslo_messaging


def get_listener(conf, transport, endpoint):
    """A notification listener (not started) feeding ``endpoint``.

    Start it with ``listener.start(override_pool_size=conf.bridge.
    executor_threads)`` to bound how many notifications are handled at once.
    """
    targets = [oslo_messaging.Target(topic=topic)
               for topic in conf.notifications.topics]
    return oslo_messaging.get_notification_listener(
        transport, targets, [endpoint], executor='threading',
        allow_requeue=True, pool=conf.bridge.pool)
