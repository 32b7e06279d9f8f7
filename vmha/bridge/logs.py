"""What the bridge drops or skips: counted, and logged at a bounded rate.

Anything may publish on the bridge's queue.  Each bad message (one
oslo.messaging cannot decode, a notification without a valid priority or
message id, a malformed ``instance.failure``) is dropped with one WARNING
line, and a redelivery of a message already handled is skipped with one
INFO line; past ``[bridge] bad_message_log_rate`` lines a minute the
bridge only counts them (``vmha_bridge_bad_messages_total``,
``vmha_bridge_duplicates_total``) and says once a minute how many lines
it left out.  A broken or hostile publisher cannot fill the disk.

Two of these happen inside oslo.messaging's rabbit driver, before any
vmha code sees the message, and it logs each with a traceback (about 66
lines for a body that is not JSON).  ``OsloLogFilter`` turns those two
records into ours: it stops the record and reports the message through
``Drops`` instead.  What the driver does with the message is unchanged:
an undecodable one is rejected (dropped, not requeued), a duplicate is
not dispatched again.
"""

import logging
import threading
import time

LOG = logging.getLogger(__name__)

WINDOW = 60.0
# One line each: a hostile publisher chooses the text we would log.
_MAX_LINE = 300

#: oslo.messaging's rabbit driver, when it cannot decode a message.
UNDECODABLE_LOGGER = 'oslo.messaging._drivers.impl_rabbit'
UNDECODABLE_MESSAGE = 'Failed to process message ... skipping it.'
#: oslo.messaging's AMQP listener, when a message it acknowledged (or
#: tried to) comes again.
DUPLICATE_LOGGER = 'oslo_messaging._drivers.amqpdriver'
DUPLICATE_MESSAGE = 'ignoring duplicate message %s'


def printable(value, limit=80):
    """``value`` as one short line: control characters escaped (a
    publisher could forge log lines with newlines), at most ``limit``
    characters."""
    text = value if isinstance(value, str) else repr(value)
    text = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + '...'


class RateLimitedLog:
    """At most ``per_minute`` lines a minute to ``logger``; then one line
    saying how many were left out, when the minute is over.

    :param what: what the lines are about, for the summary line
    """

    def __init__(self, logger, level, per_minute, what,
                 clock=time.monotonic):
        self._logger = logger
        self._level = level
        self._per_minute = per_minute
        self._what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = None
        self._logged = 0
        self.suppressed = 0

    def log(self, message, *args):
        with self._lock:
            self._roll()
            if self._window_start is None:
                self._window_start = self._clock()
            if self._logged >= self._per_minute:
                self.suppressed += 1
                return False
            self._logged += 1
        text = message % args if args else message
        if len(text) > _MAX_LINE:
            text = text[:_MAX_LINE] + '...'
        self._logger.log(self._level, '%s', text)
        return True

    def flush(self, final=False):
        """Say how many lines were left out, if the minute is over (or
        ``final``: the process is stopping)."""
        with self._lock:
            self._roll(final)

    def _roll(self, final=False):
        # Called with the lock held.
        if self._window_start is None:
            return
        elapsed = self._clock() - self._window_start
        if elapsed < WINDOW and not final:
            return
        if self.suppressed:
            self._logger.log(
                self._level, '%d more %s without a line of their own in the '
                'last %.0f s (at most %d lines a minute)', self.suppressed,
                self._what, elapsed, self._per_minute)
        self._window_start = None
        self._logged = 0
        self.suppressed = 0


class Drops:
    """Counts and logs what the bridge drops (bad messages) or skips
    (duplicates).

    :param per_minute: ``[bridge] bad_message_log_rate``
    :param metrics: a ``vmha.bridge.metrics.BridgeMetrics``
    """

    def __init__(self, per_minute, metrics, clock=time.monotonic):
        self._metrics = metrics
        self._bad = RateLimitedLog(LOG, logging.WARNING, per_minute,
                                   'bad messages dropped', clock)
        self._duplicates = RateLimitedLog(LOG, logging.INFO, per_minute,
                                          'redeliveries skipped', clock)

    def bad(self, kind, message, *args):
        """One bad message dropped; ``kind`` is the metric's label
        (``undecodable``, ``invalid``, ``malformed``)."""
        self._metrics.bad_messages.labels(kind).inc()
        self._bad.log(message, *args)

    def duplicate(self, message, *args):
        """One redelivery of a message already handled, skipped."""
        self._metrics.duplicates.inc()
        self._duplicates.log(message, *args)

    def flush(self, final=False):
        self._bad.flush(final)
        self._duplicates.flush(final)


class OsloLogFilter(logging.Filter):
    """Turns oslo.messaging's traceback for an undecodable message and for
    a duplicate into one line each through ``Drops``.

    ``install()`` puts it on the two loggers, ``remove()`` takes it off;
    every other record goes through untouched.
    """

    def __init__(self, drops):
        super().__init__()
        self._drops = drops

    def install(self):
        for name in (UNDECODABLE_LOGGER, DUPLICATE_LOGGER):
            logging.getLogger(name).addFilter(self)

    def remove(self):
        for name in (UNDECODABLE_LOGGER, DUPLICATE_LOGGER):
            logging.getLogger(name).removeFilter(self)

    def filter(self, record):
        try:
            if record.msg == UNDECODABLE_MESSAGE:
                self._undecodable(record)
                return False
            if record.msg == DUPLICATE_MESSAGE:
                self._duplicate(record)
                return False
        except Exception:  # never break the driver's own error handling
            LOG.debug('Cannot shorten %r', record.msg, exc_info=True)
        return True

    def _undecodable(self, record):
        error = record.exc_info[1] if record.exc_info else None
        raw = _raw_message(record.exc_info[2]) if record.exc_info else None
        if raw is not None:
            delivery = getattr(raw, 'delivery_info', None) or {}
            body = getattr(raw, 'body', b'') or b''
            what = ('a %d-byte message (routing key %s, %s, starting %s)'
                    % (len(body), printable(delivery.get('routing_key')),
                       printable(getattr(raw, 'content_type', None)),
                       printable(body[:40])))
        else:
            what = 'a message'
        self._drops.bad('undecodable', 'Dropping %s that oslo.messaging '
                        'cannot decode: %s: %s', what,
                        type(error).__name__, printable(str(error), 120))

    def _duplicate(self, record):
        error = record.exc_info[1] if record.exc_info else None
        # DuplicateMessageError(msg_id=...) keeps its arguments in kwargs.
        unique_id = (getattr(error, 'kwargs', None) or {}).get('msg_id')
        self._drops.duplicate(
            'Skipping a redelivery of the message with oslo.messaging '
            'unique id %s, already handled (the broker delivers again what '
            'was not acknowledged before a reconnect)', printable(unique_id))


def _raw_message(traceback):
    """The kombu message the rabbit driver was handling, from the frame
    that logged the failure (its ``message`` local); None if not there."""
    while traceback is not None:
        candidate = traceback.tb_frame.f_locals.get('message')
        if candidate is not None and hasattr(candidate, 'delivery_info'):
            return candidate
        traceback = traceback.tb_next
    return None
