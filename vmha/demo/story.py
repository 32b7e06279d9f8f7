"""The demo's script, the same on every fleet.

A fleet of five boots; web-2 crashes; db-1 hangs; an operator shuts
batch-1 down; libvirtd restarts (and web-2 is started again meanwhile,
unseen).  After each step the status table (``vmha-status``'s, from
``AgentService.status()``); at the end a summary and a verdict: "demo OK"
only when exactly the crash and the hang were reported, once each.
"""

import collections
import statistics
import time

from vmha.api import table

NAMES = ('web-1', 'web-2', 'db-1', 'cache-1', 'batch-1')
CRASH = 'web-2'
HANG = 'db-1'
SHUTDOWN = 'batch-1'
EXPECTED = {CRASH: 'qemu_died', HANG: 'guest_hung'}

# How long a step waits for what it expects (seconds), besides the
# fleet's own boot and hang timeouts.
STEP_TIMEOUT = 10.0
POLL = 0.02


class Story:
    """:param fleet: the fleet (``vmha.demo`` describes its interface)
    :param agent: the running ``AgentService``
    :param screen: a ``show.Screen``
    :param sink: the ``show.ScreenSink`` the agent sends to
    :param printer: the ``show.EventPrinter`` registered on the driver
    :param watcher: a ``show.AgentWatcher``
    :param sleep: the concurrency backend's sleep
    :param stopped_delay: ``[events] stopped_delay``
    """

    def __init__(self, fleet, agent, screen, sink, printer, watcher, sleep,
                 stopped_delay):
        self.fleet = fleet
        self.agent = agent
        self.screen = screen
        self.sink = sink
        self.printer = printer
        self.watcher = watcher
        self._sleep = sleep
        self._stopped_delay = stopped_delay
        self.domain = {}  # story name -> domain name (the fleet's)
        self.incidents = {}  # domain name -> monotonic time of the crash/hang
        self.problems = []
        self.connection = {}

    # --- helpers ------------------------------------------------------------

    def wait(self, predicate, timeout):
        """Poll ``predicate`` (printing guest-agent changes meanwhile);
        True if it came true within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.watcher.poll()
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            self._sleep(POLL)

    def failures(self, name=None):
        return self.sink.of_type('instance.failure',
                                 name and self.domain.get(name, name))

    def agent_state(self, name):
        return self.watcher.states().get(self.domain.get(name, name),
                                         {}).get('state')

    def status(self):
        self.wait(lambda: not self.agent.sender.outbox.depth(), 2.0)
        status = self.agent.status()
        self.screen.write()
        for text in table.render(status).splitlines():
            self.screen.write('    ' + text)
        if any(row.get('source') == 'journal'
               for row in status['instances']):
            self.screen.write('    (libvirt unreachable: power states as '
                              'the journal last knew them)')

    # --- the script ---------------------------------------------------------

    def play(self):
        steps = (self.boot, self.crash, self.hang, self.shutdown,
                 self.libvirt_restart)
        for number, step in enumerate(steps, 1):
            step('%d/%d' % (number, len(steps)))
        self.wait(lambda: not self.agent.sender.outbox.depth(), 3.0)
        self._sleep(0.3)  # a duplicate would show up now
        self.watcher.poll()
        return self.summary()

    def boot(self, number):
        self.screen.step('%s  A fleet of five boots: %s' % (
            number, ', '.join(NAMES)))
        self.domain = self.fleet.boot(NAMES)
        booted = self.wait(lambda: all(
            self.printer.seen(self.domain[name], 'STARTED_BOOTED')
            for name in NAMES), self.fleet.boot_timeout)
        answered = booted and self.wait(lambda: all(
            self.agent_state(name) == 'healthy' for name in NAMES),
            self.fleet.boot_timeout)
        if not booted:
            self.problem('the fleet did not boot within %.0fs'
                         % self.fleet.boot_timeout)
        elif not answered:
            self.problem('not every guest agent answered within %.0fs'
                         % self.fleet.boot_timeout)
        self.status()

    def crash(self, number):
        self.screen.step('%s  %s crashes: its QEMU process dies' % (
            number, CRASH), self.fleet.notes['crash'])
        self.screen.line('crash', '%s: its QEMU dies' % CRASH)
        self.incidents[self.domain[CRASH]] = self.fleet.crash(CRASH)
        if not self.wait(lambda: self.failures(CRASH), STEP_TIMEOUT):
            self.screen.line('!', 'no failure reported for %s within %.0fs'
                             % (CRASH, STEP_TIMEOUT))
        self.status()

    def hang(self, number):
        self.screen.step('%s  %s hangs: libvirt still says "running"' % (
            number, HANG), self.fleet.notes['hang'])
        self.screen.line('hang', '%s: the guest freezes' % HANG)
        self.incidents[self.domain[HANG]] = self.fleet.hang(HANG)
        if not self.wait(lambda: self.failures(HANG),
                         self.fleet.hang_timeout):
            self.screen.line('!', 'no failure reported for %s within %.0fs'
                             % (HANG, self.fleet.hang_timeout))
        self.status()

    def shutdown(self, number):
        self.screen.step('%s  An operator shuts %s down' % (
            number, SHUTDOWN), self.fleet.notes['shutdown'])
        self.screen.line('admin', 'shutdown %s' % SHUTDOWN)
        self.fleet.shutdown(SHUTDOWN)
        if not self.wait(lambda: self.stopped(SHUTDOWN),
                         self._stopped_delay + self.fleet.shutdown_timeout):
            self.problem('the shutdown of %s was not recorded' % SHUTDOWN)
        self.status()

    def libvirt_restart(self, number):
        self.screen.step('%s  libvirtd restarts' % number,
                         self.fleet.notes['drop'])
        audit = self.agent.audit
        runs = audit.runs
        before = self.agent.reporter.store.all()
        self.screen.line('admin', 'libvirtd goes away')
        self.fleet.drop_libvirt()
        self.wait(lambda: self.sink.of_type('host.connection'),
                  STEP_TIMEOUT)
        self.status()
        self.screen.write()
        self.screen.line('admin', '%s started again while vmha cannot see '
                         'it (as Masakari\'s recovery would)' % CRASH)
        self.screen.note(self.fleet.notes['recover'])
        self.fleet.recover(CRASH)
        self.screen.line('admin', 'libvirtd starts again')
        self.fleet.restore_libvirt()
        restored = self.wait(lambda: len(self.sink.of_type(
            'host.connection')) >= 2, STEP_TIMEOUT + 30)
        audited = restored and self.wait(lambda: audit.runs > runs,
                                         STEP_TIMEOUT)
        self.connection = {'restored': restored, 'audited': audited,
                           'audit_runs': audit.runs}
        if audited:
            self._show_audit(before)
        self.wait(lambda: self.agent_state(CRASH) == 'healthy',
                  self.fleet.boot_timeout)
        self.status()

    def _show_audit(self, before):
        after = self.agent.reporter.store.all()
        self.screen.line('audit', 'power-state audit #%d after the '
                         'reconnect: %d domain(s) compared with the journal'
                         % (self.agent.audit.runs, len(after)))
        self.screen.note('what the journal learnt since libvirtd went away '
                         '(from events, or from the audit for what they '
                         'missed):')
        for uuid, row in sorted(after.items(), key=lambda i: i[1].name):
            old = before.get(uuid)
            if old is None:
                continue
            changes = []
            if (old.power_state, old.state_reason) != (row.power_state,
                                                       row.state_reason):
                changes.append('journal had %s (%s), now %s (%s)'
                               % (old.power_state, old.state_reason,
                                  row.power_state, row.state_reason))
            if old.failure_cause and not row.failure_cause:
                changes.append('failure episode (%s) closed'
                               % old.failure_cause)
            if changes:
                self.screen.note('%s: %s' % (row.name, '; '.join(changes)))

    def stopped(self, name):
        """The STOPPED_* lifecycle notifications of ``name``."""
        return [message.payload['vmha_object.data']['vir_domain_event']
                for _, message in self.sink.of_type(
                    'instance.lifecycle', self.domain.get(name, name))
                if message.payload['vmha_object.data']['transition']
                == 'STOPPED']

    # --- the end ------------------------------------------------------------

    def problem(self, text):
        self.problems.append(text)
        self.screen.line('!', text)

    def summary(self):
        screen = self.screen
        screen.step('summary')
        failures = self.failures()
        by_cause = collections.Counter(
            message.payload['vmha_object.data']['cause']
            for _, message in failures)
        screen.write('decisions by cause: %s' % (', '.join(
            '%s %d' % item for item in sorted(by_cause.items())) or 'none'))
        width = max([len(message.payload['vmha_object.data']['name'])
                     for _, message in failures] or [0])
        for when, message in failures:
            data = message.payload['vmha_object.data']
            incident = self.incidents.get(data['name'])
            latency = ('detected %.3fs after the %s' % (
                when - incident, 'crash' if data['name'] ==
                self.domain.get(CRASH) else 'hang')
                if incident is not None else '')
            screen.write('  %-*s %-11s %-38s %s' % (
                width, data['name'], data['cause'], '%s/%s' % (
                    data['event'], data['vir_domain_event']), latency))
        stopped = self.stopped(SHUTDOWN)
        screen.write('%s shutdown: %s' % (
            SHUTDOWN, 'recorded (%s), not a failure' % ', '.join(stopped)
            if stopped else 'NOT RECORDED'))
        connection = [message.payload['vmha_object.data']['state']
                      for _, message in self.sink.of_type('host.connection')]
        screen.write('libvirt connection: %s; audits run: %s' % (
            ' -> '.join(connection) or 'never lost',
            self.connection.get('audit_runs', self.agent.audit.runs)))
        latencies = self.printer.dispatch_latencies()
        dispatch = self.agent.driver.dispatch_stats()
        screen.write('events dispatched: %d; dispatch latency (libvirt '
                     'callback to listener): %s' % (
                         dispatch.dispatched,
                         'median %.2f ms, min %.2f ms, max %.2f ms' % (
                             statistics.median(latencies) * 1000,
                             latencies[0] * 1000, latencies[-1] * 1000)
                         if latencies else '-'))
        kinds = collections.Counter(message.event_type
                                    for _, message in self.sink.received)
        screen.write('notifications: %d (%s)' % (
            len(self.sink.received), ', '.join(
                '%s %d' % item for item in sorted(kinds.items()))))
        self.problems.extend(self.check(failures, stopped, connection))
        if self.problems:
            screen.write('demo FAILED: %s' % '; '.join(self.problems))
            return 1
        screen.write('demo OK')
        return 0

    def check(self, failures, stopped, connection):
        """What went differently from the script (empty: nothing)."""
        problems = []
        reported = collections.defaultdict(list)
        for _, message in failures:
            data = message.payload['vmha_object.data']
            reported[data['name']].append(data['cause'])
        for name, cause in EXPECTED.items():
            causes = reported.pop(self.domain.get(name, name), [])
            what = 'crash' if name == CRASH else 'hang'
            if not causes:
                problems.append("%s's %s was not reported (expected "
                                'once, %s)' % (name, what, cause))
            elif causes != [cause]:
                problems.append("%s's %s was reported as %s (expected "
                                'once, %s)' % (name, what,
                                               ', '.join(causes), cause))
        for name, causes in sorted(reported.items()):
            problems.append('unexpected failure of %s (%s)'
                            % (name, ', '.join(causes)))
        if not stopped:
            problems.append('the shutdown of %s was not recorded'
                            % SHUTDOWN)
        if connection[:2] != ['lost', 'restored']:
            problems.append('expected the libvirt connection lost, then '
                            'restored; saw %s' % (connection or 'nothing'))
        elif not self.connection.get('audited'):
            problems.append('no power-state audit after the reconnect')
        return problems
