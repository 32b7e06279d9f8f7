"""Options of the [notifications] group: where vmha's notifications go."""

from oslo_config import cfg

from vmha.conf import base

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
    cfg.IntOpt('repeat_window',
               default=300,
               min=0,
               help="""
Seconds during which repeats of a failure Masakari does not act on are
counted instead of sent, per domain and cause.

Failures that open no episode (a watchdog whose action is none, reset,
debug or inject-nmi; a control error) can repeat without end: a watchdog
firing every second would send 86,400 ``instance.failure`` notifications
a day.  The first one is sent; its repeats within this window are counted
in memory (no journal write) and the next one sent for that domain and
cause carries the count in its ``suppressed`` field.  Failures Masakari
recovers are never held back.

Possible values:

* 0: send every one.
* A positive number of seconds.

Related options:

* ``[notifications] max_error_notifications_per_minute``
"""),
    cfg.IntOpt('max_error_notifications_per_minute',
               default=60,
               min=0,
               help="""
Most failure notifications Masakari does not act on that this host sends
in a minute.

Beyond it they are dropped and counted (in the next notification of the
same domain and cause, and in ``vmha_notifications_suppressed_total`` with
``reason="host_cap"``); one warning says when the cap starts biting, once
a minute at most.  Failures Masakari recovers are never dropped nor
counted here.

Possible values:

* 0: no cap.
* A positive number of notifications.

Related options:

* ``[notifications] repeat_window``
"""),
]


def register_opts(conf):
    base.register_group(conf, notifications_group, notifications_opts)


def list_opts():
    return {notifications_group: notifications_opts}
