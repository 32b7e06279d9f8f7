"""Options of the [notifications] group: where vmha's notifications go."""

import copy

from oslo_config import cfg

notifications_group = cfg.OptGroup('notifications',
                                   title='Outgoing notifications')

notifications_opts = [
    cfg.ListOpt('sinks',
                default=['messaging'],
                help="""
Where notifications are delivered, in this order.

A notification counts as delivered when every sink named here has it (or
has rejected it for good); until then it is sent again.

Possible values:

* ``messaging``: the message bus (oslo.messaging, messagingv2 envelope),
  topics ``[notifications] topics``.  vmha-masakari-bridge forwards
  failures from there to Masakari.  The default.
* ``masakari``: straight to Masakari's REST API (direct mode, no bus);
  configure the ``[masakari]`` group.
* ``log``: one log line per notification.

Related options:

* ``[notifications] topics``
* ``[masakari]`` group
"""),
    cfg.ListOpt('topics',
                default=['versioned_notifications'],
                help="""
Message bus topics the ``messaging`` sink sends to.

A notification of priority P goes to ``<topic>.<p>`` (``ERROR`` to
``versioned_notifications.error``), as oslo.messaging's messagingv2 driver
does, so nova-style consumers and vmha-masakari-bridge read it.  These are
vmha's own topics: ``[oslo_messaging_notifications] topics`` is not used.

Queues that are not durable lose every waiting notification when RabbitMQ
restarts: set ``[oslo_messaging_rabbit] amqp_durable_queues = true`` (or
use quorum queues) here and on every consumer, including the bridge.

Related options:

* ``[oslo_messaging_notifications] transport_url``: the bus to use (falls
  back to ``[DEFAULT] transport_url``)
* ``[oslo_messaging_rabbit] amqp_durable_queues``
"""),
    cfg.IntOpt('send_retry',
               default=3,
               min=0,
               help="""
Connection attempts the ``messaging`` sink retries for one send.

Past this many reconnect retries the send fails and the notification stays
in the outbox to be sent again later; it is never dropped.  Unlike
oslo.messaging's Notifier, vmha never retries forever inside a send.

Possible values:

* 0: try once.
* A positive number of retries.
"""),
]


def register_opts(conf):
    # A copy per ConfigOpts: register_group copies the group shallowly, so
    # a shared OptGroup would share option overrides between them.
    conf.register_group(copy.deepcopy(notifications_group))
    conf.register_opts(notifications_opts, group=notifications_group)


def list_opts():
    return {notifications_group: notifications_opts}
