"""The agent while its journal cannot be written (issue 11 item 2).

Real loops of the backend under test, the fake libvirt, a real SQLite
journal: on a full file system (a small tmpfs, filled), or with another
connection holding the write lock.  What a user notices: the failure
notification delivered exactly once after the journal takes writes
again, /healthz unhealthy meanwhile, and the loops turning over.
"""

import os
import subprocess

from oslo_config import cfg
import pytest

from tests.conftest import BACKEND
from tests.conftest import backend_sleep
from tests.fixtures import sinks
from tests.fixtures import virt
from tests.unit.test_journal_failures import LockHolder
from vmha import agent as agent_lib
from vmha import concurrency
from vmha import objects
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.manager import audit as audit_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import selection
from vmha.manager import state

pytestmark = pytest.mark.functional
objects.register_all()
RUN_BLOCKING = concurrency.get(BACKEND).run_blocking
RUNNING, SHUTOFF_FAILED = (1, 1), (5, 6)
STOPPED, FAILED = 5, 5  # libvirt lifecycle event and detail codes


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards."""
    mountpoint = tmp_path / 'fs'
    mountpoint.mkdir()
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs',
         str(mountpoint)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip('cannot mount a tmpfs to fill (needs root and '
                    'CAP_SYS_ADMIN): %s' % result.stderr.strip())
    yield mountpoint
    subprocess.run(['umount', '-l', str(mountpoint)], check=False)


def fill(directory):
    """Write a file until the file system is full; returns its path."""
    path = os.path.join(directory, 'filler')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b'\0' * 4096):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return path


def start_agent(journal, driver):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[])
    conf.set_override('host', 'compute-1')
    conf.set_override('concurrency_backend', BACKEND)
    conf.set_override('enabled', False, group='guest_agent')
    conf.set_override('port', 0, group='health')
    conf.set_override('enabled', False, group='rpc')
    outbox = outbox_lib.Outbox(journal)
    sink = sinks.RecordingSink()
    sender = sender_lib.OutboxSender(outbox, sink, BACKEND)
    agent = agent_lib.build(conf, driver, journal, outbox, sender)
    agent.start()
    agent.sink = sink
    return agent


def delivered_failures(agent):
    return [m.payload['vmha_object.data']['name']
            for m in agent.sink.messages
            if m.event_type == 'instance.failure']


def delivered_once_dispatched(agent, driver, wait_for):
    """Turn the dispatcher over until vm-1's failure is delivered."""
    def turned_over_and_delivered():
        RUN_BLOCKING(driver.host.handler.dispatch_pending)
        return delivered_failures(agent) == ['vm-1']
    wait_for(turned_over_and_delivered, timeout=10,
             what='the failure delivered')


@pytest.fixture
def on_a_full_disk(small_fs, wait_for):
    """(agent, driver, domain vm-1, the filler file): the agent's journal
    on ``small_fs``, filled once the start-up audit has run."""
    journal = db.Journal(str(small_fs / 'vmha.sqlite'))
    driver = virt.make_driver(stopped_delay=0)
    dom = driver.fake.add_domain('vm-1')
    agent = start_agent(journal, driver)
    try:
        wait_for(lambda: agent.audit.runs >= 1, what='the start-up audit')
        yield agent, driver, dom, fill(small_fs)
    finally:
        agent.stop()
        journal.close()


def test_a_failure_decided_on_a_full_disk_is_delivered_once_space_is_back(
        on_a_full_disk, wait_for):
    agent, driver, dom, filler = on_a_full_disk
    dom.state_value = SHUTOFF_FAILED
    driver.fake.fire_lifecycle(dom, STOPPED, FAILED)  # QEMU died
    RUN_BLOCKING(driver.host.handler.dispatch_pending)
    report = agent.health_report()
    assert report['status'] == 'unhealthy'
    assert report['checks']['journal']['pending'] == 1
    assert 'full' in report['checks']['journal']['error']
    assert not agent.health.turning_over()
    backend_sleep(1.0)
    assert delivered_failures(agent) == []

    os.unlink(filler)
    delivered_once_dispatched(agent, driver, wait_for)
    backend_sleep(1.0)
    RUN_BLOCKING(driver.host.handler.dispatch_pending)
    assert delivered_failures(agent) == ['vm-1']
    assert agent.health_report()['status'] == 'ok'


def test_a_record_only_failure_on_a_full_disk_is_delivered_once_after(
        on_a_full_disk, wait_for, caplog):
    """Regression: the rate limiter admitted a watchdog-reset notification
    before the full disk refused its transaction, so every retry counted
    as a repeat of the first try and the notification was never sent; the
    decision was also counted and logged once per try."""
    agent, driver, dom, filler = on_a_full_disk
    driver.fake.connection.fire(3, dom, 2)  # WATCHDOG reset
    RUN_BLOCKING(driver.host.handler.dispatch_pending)
    backend_sleep(1.0)
    RUN_BLOCKING(driver.host.handler.dispatch_pending)  # a retry
    assert delivered_failures(agent) == []
    assert agent.reporter.decisions_total == 0
    os.unlink(filler)
    delivered_once_dispatched(agent, driver, wait_for)
    (failure,) = [m.payload['vmha_object.data']
                  for m in agent.sink.messages
                  if m.event_type == 'instance.failure']
    assert (failure['vir_domain_event'], failure['suppressed']) == (
        'WATCHDOG_RESET', 0)
    assert agent.reporter.decisions_total == 1
    assert caplog.text.count('Failure of vm-1') == 1


def test_an_audit_that_could_not_write_runs_again_within_seconds(
        tmp_path, wait_for):
    path = str(tmp_path / 'vmha.sqlite')
    journal = db.Journal(path, busy_timeout=0.05)
    outbox = outbox_lib.Outbox(journal)
    store = state.StateStore(journal)
    reporter = failure_monitor.Reporter(outbox, store, 'compute-1')
    driver = virt.make_driver(stopped_delay=0)
    dom = driver.fake.add_domain('vm-1')
    driver.init_host()
    audit = audit_lib.PowerStateAudit(
        driver, journal, reporter, selection.Selector(driver),
        concurrency.get(BACKEND), interval=60, store=store)
    audit.run_once()  # the journal knows vm-1 running
    dom.state_value = SHUTOFF_FAILED  # died unseen: only an audit finds it
    lock = LockHolder(path)
    audit.start()
    try:
        backend_sleep(0.5)  # the start-up audit fails on the lock
        lock.release()
        wait_for(lambda: [m.event_type for m in outbox.pending(10)] ==
                 ['instance.failure'], timeout=5.0,  # not the 60 s interval
                 what='the audit to run again and report')
    finally:
        audit.stop()
        driver.cleanup()
        journal.close()


def test_the_guest_agent_monitor_loop_turns_over_every_second_when_idle(
        tmp_path):
    journal = db.Journal(str(tmp_path / 'vmha.sqlite'))
    reporter = failure_monitor.Reporter(
        outbox_lib.Outbox(journal), state.StateStore(journal), 'compute-1')
    driver = virt.make_driver()
    driver.init_host()
    backend = concurrency.get(BACKEND)
    monitor = guest_monitor.GuestAgentMonitor(
        driver, journal, reporter, selection.Selector(driver),
        concurrency.NativePool(backend, 2), backend,
        guest_monitor.Settings())
    monitor.start()
    try:
        backend_sleep(2.5)  # nothing to ping, the next refresh in 60 s
        assert monitor.turnover_age() < 1.5
    finally:
        monitor.stop()
        driver.cleanup()
        journal.close()
