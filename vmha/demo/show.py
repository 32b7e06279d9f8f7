"""What the demo prints, as it happens.

``Screen`` writes timestamped lines (many tasks print: the dispatcher,
the outbox sender, the story).  ``EventPrinter`` is a driver listener:
one line per dispatched event.  ``ScreenSink`` is the notification sink
the demo's agent sends to: one line per notification, and for a failure
the body Masakari would get, made by ``vmha.masakari.translate`` as the
bridge makes it.  ``AgentWatcher`` prints each guest-agent state change
it sees in the guest-agent monitor's status.
"""

import json
import os
import sys
import threading
import time

from vmha.masakari import translate
from vmha.notify import base
from vmha.virt import event as ev


class Screen:
    """Lines on ``out``, each stamped with the seconds since the start."""

    def __init__(self, out, clock=time.monotonic):
        self._out = out
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self.started = clock()

    def since(self, when):
        return when - self.started

    def write(self, text=''):
        with self._lock:
            if self._closed:
                return
            try:
                self._out.write(text + '\n')
                self._out.flush()
            except BrokenPipeError:
                # The reader left (``| head``): the story plays on
                # silently, and its exit status still says how it went.
                self._closed = True
                if self._out is sys.stdout:
                    # As Python's documentation advises: no second error
                    # when the interpreter flushes stdout at exit.
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())

    def line(self, kind, text, when=None):
        when = self._clock() if when is None else when
        self.write('  %+7.3fs  %-6s  %s' % (self.since(when), kind, text))

    def note(self, text):
        self.write(_wrap(text, '           '))

    def step(self, title, note=None):
        self.write('\n== %s' % title)
        if note:
            self.note(note)


def _wrap(text, indent, width=78):
    lines, line = [], indent
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += word + ' '
    lines.append(line.rstrip())
    return '\n'.join(lines)


class EventPrinter:
    """A driver listener: prints and keeps every dispatched event."""

    def __init__(self, screen, stopped_delay):
        self._screen = screen
        self._stopped_delay = stopped_delay
        self.events = []  # (event, seconds from callback to listener)

    def __call__(self, event):
        latency = time.monotonic() - event.monotonic
        self.events.append((event, latency))
        if isinstance(event, ev.InstanceEvent):
            text = '%-10s %-18s %s' % (event.event_name,
                                       event.vir_domain_event, event.name)
            if self.held_back(event):
                text += '  (held back %.1fs: a restart would cancel it)' % (
                    latency)
        else:
            text = event.describe()
        self._screen.line('event', text)

    def held_back(self, event):
        return (isinstance(event, ev.LifecycleEvent)
                and event.transition == ev.EVENT_LIFECYCLE_STOPPED
                and event.detail not in ev.UNDELAYED_STOPPED_DETAILS
                and self._stopped_delay > 0)

    def seen(self, name, vir_domain_event):
        return any(getattr(event, 'name', None) == name
                   and getattr(event, 'vir_domain_event', None)
                   == vir_domain_event for event, _ in self.events)

    def dispatch_latencies(self):
        """Callback-to-listener latencies of the events not held back on
        purpose."""
        return sorted(latency for event, latency in self.events
                      if isinstance(event, ev.InstanceEvent)
                      and not self.held_back(event))


class ScreenSink(base.Sink):
    """Prints each notification the outbox sender hands over, and keeps
    it with the time it arrived."""

    name = 'demo-screen'

    def __init__(self, screen, clock=time.monotonic):
        self._screen = screen
        self._clock = clock
        self.received = []  # (monotonic time, Message)

    def send(self, message):
        when = self._clock()
        self.received.append((when, message))
        data = message.payload.get('vmha_object.data', {})
        show = getattr(self, '_show_' + message.event_type.replace('.', '_'),
                       self._show_other)
        show(when, message, data)

    def close(self):
        pass

    def of_type(self, event_type, name=None):
        return [(when, message) for when, message in self.received
                if message.event_type == event_type
                and (name is None or message.payload.get(
                    'vmha_object.data', {}).get('name') == name)]

    def _show_instance_failure(self, when, message, data):
        self._screen.line('notify', 'instance.failure    %s  FAILURE, cause '
                          '%s' % (data.get('name'), data.get('cause')), when)
        self._screen.note('evidence: %s' % data.get('evidence'))
        try:
            body = translate.to_masakari(message.payload)
        except translate.MalformedNotification as error:
            self._screen.note('not for Masakari: %s' % error)
            return
        if body is None:
            self._screen.note('recorded only: Masakari does not act on %s/%s'
                              % (data.get('event'),
                                 data.get('vir_domain_event')))
            return
        self._screen.write('           -> Masakari: POST /v1/notifications')
        for text in json.dumps(body, indent=2).splitlines():
            self._screen.write('              ' + text)

    def _show_instance_lifecycle(self, when, message, data):
        self._screen.line('notify', 'instance.lifecycle  %s  %s, power '
                          'state %s: not a failure' % (
                              data.get('name'), data.get('vir_domain_event'),
                              data.get('power_state')), when)

    def _show_guest_health(self, when, message, data):
        self._screen.line('notify', 'guest.health        %s  %s -> %s (%s): '
                          '%s' % (data.get('name'), data.get('old_state'),
                                  data.get('state'), message.priority,
                                  data.get('reason')), when)

    def _show_host_connection(self, when, message, data):
        if data.get('state') == 'lost':
            what = 'LOST (%s)' % data.get('reason')
        else:
            what = 'RESTORED after %.1fs, %s attempt(s)' % (
                data.get('outage_seconds') or 0, data.get('attempts'))
        self._screen.line('notify', 'host.connection     %s  %s'
                          % (data.get('uri'), what), when)

    def _show_other(self, when, message, data):
        self._screen.line('notify', '%-19s %s' % (message.event_type,
                                                  data.get('name', '')), when)


class AgentWatcher:
    """Prints each guest-agent state change the monitor's status shows
    (polled: a line may come a few milliseconds after the change)."""

    def __init__(self, screen, guest_monitor):
        self._screen = screen
        self._monitor = guest_monitor
        self._states = {}

    def states(self):
        if self._monitor is None:
            return {}
        return {row['name']: row for row in self._monitor.status()
                if row['pinged']}

    def poll(self):
        rows = self.states()
        for name in set(self._states) - set(rows):
            del self._states[name]  # stopped: no longer pinged
        for name, row in sorted(rows.items()):
            old = self._states.get(name)
            key = (row['state'], row['failures'])
            if old == key or (old is not None and old[0] == row['state']
                              and row['state'] != 'error'):
                self._states[name] = key
                continue  # more failed pings of a guest already reported
            self._states[name] = key
            if old is None:
                text = 'guest agent watched, %s' % row['state']
            elif old[0] != row['state']:
                text = '%s -> %s' % (old[0], row['state'])
            else:
                text = 'still %s' % row['state']
            if row['failures']:
                text += ': %d failed ping(s), last: %s' % (
                    row['failures'], row['last_error'])
            elif row['state'] == 'healthy' and \
                    row['last_ping_latency'] is not None:
                text += ': answered in %.1f ms' % (
                    row['last_ping_latency'] * 1000)
            self._screen.line('agent', '%-10s %s' % (name, text))
