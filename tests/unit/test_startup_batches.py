"""Start-up at scale: the domains' metadata and XML are read in batches
(one blocking job per batch, not per domain), and the guest-agent
monitor lists the host only after the start-up audit when the agent
holds it back."""

from tests.fixtures import fakelibvirt
from tests.fixtures import virt
from tests.unit.test_guest_monitor import Host
from vmha.manager import batched
from vmha.manager import guest_states as gs
from vmha.manager import selection
from vmha.virt import driver as virt_driver

OFF = '<monitoring xmlns="%s" enabled="no"/>' % selection.NAMESPACE


class CountingRun:
    """A ``run_blocking`` that counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, function, *args):
        self.calls.append(function.__name__)
        return function(*args)


def test_prefetch_decides_every_domain_in_one_call_per_batch():
    driver = virt.make_driver()
    driver.init_host()
    doms = [driver.fake.add_domain('vm-%04d' % i)
            for i in range(selection.BATCH + 10)]
    doms[3].metadata_elements[selection.NAMESPACE] = OFF
    run = CountingRun()
    selector = selection.Selector(driver, run_blocking=run)

    selector.prefetch(driver.list_instances())

    assert run.calls == ['get_metadata_batch'] * 2
    for dom in doms:  # answered from the cache: no more libvirt calls
        assert selector.is_monitored(dom.UUIDString(), dom.name()) is (
            dom is not doms[3])
    assert len(run.calls) == 2
    driver.cleanup()


def test_a_failed_read_in_a_batch_is_asked_again_on_its_own():
    """libvirt refusing one domain's metadata for now leaves that domain
    undecided (asked again later); one that vanished meanwhile is
    decided by its name; the others are decided."""
    driver = virt.make_driver()
    driver.init_host()
    flaky, gone, off = (driver.fake.add_domain(name)
                        for name in ('flaky', 'gone', 'off'))
    off.metadata_elements[selection.NAMESPACE] = OFF
    infos = driver.list_instances()
    flaky.metadata = lambda *args: (_ for _ in ()).throw(
        fakelibvirt.libvirtError('internal error', 1))
    del driver.fake.domains[gone.UUIDString()]
    run = CountingRun()
    selector = selection.Selector(driver, exclude=['gone'],
                                  run_blocking=run)

    selector.prefetch(infos)

    assert run.calls == ['get_metadata_batch']
    assert selector.is_monitored(off.UUIDString(), 'off') is False
    assert selector.is_monitored(gone.UUIDString(), 'gone') is False
    assert len(run.calls) == 1
    # The flaky one is read again, on its own, once libvirt answers.
    del flaky.metadata
    flaky.metadata_elements[selection.NAMESPACE] = OFF
    assert selector.is_monitored(flaky.UUIDString(), 'flaky') is False
    assert run.calls == ['get_metadata_batch', 'get_instance_metadata']
    driver.cleanup()


def test_the_driver_batch_calls_answer_each_domain_or_its_error():
    driver = virt.make_driver()
    driver.init_host()
    good = driver.fake.add_domain('good')
    good.has_agent_channel = True
    broken = driver.fake.add_domain('broken')
    broken.xml_override = '<domain'
    found = driver.describe_guests(
        [good.UUIDString(), broken.UUIDString(), 'no-such-uuid'],
        selection.NAMESPACE)
    assert found[good.UUIDString()].agent_channel
    assert isinstance(found[broken.UUIDString()], ValueError)
    assert isinstance(found['no-such-uuid'],
                      virt_driver.exception.DomainNotFound)
    driver.cleanup()


def test_the_monitor_describes_a_big_host_in_batches(tmp_path):
    """Thousands of domains: one describe job per batch, one batch at a
    time; a domain with a broken XML is skipped with a warning and the
    others are pinged."""
    host = Host(str(tmp_path / 'vmha.sqlite'), interval=5.0, timeout=2.0,
                failure_threshold=2)
    try:
        doms = [host.vm('vm-%04d' % i)
                for i in range(2 * batched.SIZE + 1)]
        doms[7].xml_override = '<domain'
        host.step()
        host.step()  # each batch is collected by the next step
        kinds = [job.key[0] for job in host.pool.submitted]
        assert kinds.count('describe*') == 3
        assert 'describe' not in kinds
        states = {s['uuid']: s for s in host.monitor.status()}
        for dom in doms:
            pinged = states[dom.UUIDString()]['pinged']
            assert pinged is (dom is not doms[7])
        host.run(40)  # the inline pool pings 16 per step
        assert {host.state_of(dom) for dom in doms if dom is not doms[7]} \
            == {gs.HEALTHY}
        assert doms[7].agent_calls == 0
    finally:
        host.close()


def held(tmp_path):
    """A host with one VM whose monitor is held back at start-up."""
    host = Host(str(tmp_path / 'vmha.sqlite'), interval=5.0, timeout=2.0,
                failure_threshold=2)
    dom = host.vm()
    host.monitor.hold_first_listing = True
    host.monitor.load()
    return host, dom


def test_a_held_monitor_lists_the_host_after_the_audit(tmp_path):
    host, dom = held(tmp_path)
    try:
        host.run(3)
        assert host.pool.calls('list') == []
        assert dom.agent_calls == 0
        host.monitor.release_listing()
        host.step()
        assert len(host.pool.calls('list')) == 1
        assert host.state_of(dom) == gs.HEALTHY
    finally:
        host.close()


def test_a_held_monitor_lists_the_host_anyway_after_the_bound(tmp_path):
    """An audit that never ends its first run (libvirtd down) must not
    keep the monitor from watching the guests."""
    host, dom = held(tmp_path)
    try:
        host.run(9)
        assert host.pool.calls('list') == []
        host.run(2)
        assert len(host.pool.calls('list')) == 1
        assert host.state_of(dom) == gs.HEALTHY
    finally:
        host.close()
