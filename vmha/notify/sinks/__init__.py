"""The notification sinks, and ``load_sink`` to build what the config names.

Sinks are stevedore plugins in the ``vmha.notify.sinks`` entry point
namespace; each class is built as ``Sink(conf, transport=transport)``.
vmha ships ``messaging`` (the bus, default), ``masakari`` (direct REST)
and ``log``.
"""

import collections
import logging

import stevedore

from vmha.notify import base

LOG = logging.getLogger(__name__)

NAMESPACE = 'vmha.notify.sinks'


class MultiSink(base.Sink):
    """Delivers each message to several sinks, in order.

    A message counts as delivered when every sink has it.  When one sink
    fails, the others are still tried, then ``DeliveryError`` names the
    sinks that failed.  The sinks that already have the message are
    remembered (for the last ``remember`` failed messages), so the resend
    goes only to the ones that failed.
    """

    name = 'multi'

    def __init__(self, sinks, remember=1000):
        if not sinks:
            raise ValueError('MultiSink needs at least one sink')
        self.sinks = list(sinks)
        self._remember = remember
        # message_id -> names of the sinks that have it
        self._partial = collections.OrderedDict()

    def send(self, message):
        delivered = self._partial.pop(message.message_id, set())
        failures = []
        for sink in self.sinks:
            if sink.name in delivered:
                continue
            try:
                sink.send(message)
            except base.DeliveryError as error:
                failures.append('%s: %s' % (sink.name, error))
            else:
                delivered.add(sink.name)
        if failures:
            self._partial[message.message_id] = delivered
            while len(self._partial) > self._remember:
                self._partial.popitem(last=False)
            raise base.DeliveryError('; '.join(failures))

    def close(self):
        for sink in self.sinks:
            sink.close()


def known_sinks():
    """Names of the installed sink plugins."""
    return sorted(stevedore.ExtensionManager(NAMESPACE).names())


def load_sink(conf, transport=None):
    """The sink ``[notifications] sinks`` asks for (a MultiSink for more
    than one).

    :param transport: an oslo.messaging notification transport for the
        ``messaging`` sink; it makes its own from ``conf`` if None
    :raises ValueError: an unknown, repeated or missing sink name
    """
    names = list(conf.notifications.sinks)
    manager = stevedore.ExtensionManager(
        NAMESPACE, on_load_failure_callback=_raise_load_failure)
    known = sorted(manager.names())
    if not names:
        raise ValueError('[notifications] sinks is empty; known sinks: %s'
                         % ', '.join(known))
    sinks = []
    for name in names:
        if name not in known:
            raise ValueError('unknown notification sink %r in '
                             '[notifications] sinks; known sinks: %s'
                             % (name, ', '.join(known)))
        if names.count(name) > 1:
            raise ValueError('notification sink %r is named more than once '
                             'in [notifications] sinks' % name)
        sink = manager[name].plugin(conf, transport=transport)
        sink.name = name
        sinks.append(sink)
    LOG.debug('Notification sinks: %s', ', '.join(names))
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


def _raise_load_failure(manager, entrypoint, error):
    raise RuntimeError('cannot load notification sink %s: %s'
                       % (entrypoint.name, error)) from error
