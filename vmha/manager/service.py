"""The vmha-agent service: the virt driver plus its listeners.

For now the only listener logs each event; the failure monitor, the
power-state audit and the guest-agent monitor attach here later.
"""

import logging
import signal
import threading

LOG = logging.getLogger(__name__)


class AgentService:
    """Runs one virt driver until SIGTERM or SIGINT."""

    def __init__(self, driver, host):
        self.driver = driver
        self.host = host
        self._stopped = threading.Event()

    def start(self):
        self.driver.register_event_listener(self._log_event)
        self.driver.init_host()
        instances = self.driver.list_instances()
        LOG.info('vmha-agent on %s watching %d domain(s)', self.host,
                 len(instances))

    def _log_event(self, event):
        LOG.info('%s', event.describe())

    def wait(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        while not self._stopped.wait(1):
            pass
        self.stop()

    def _on_signal(self, signum, frame):
        LOG.info('Signal %d received; stopping', signum)
        self._stopped.set()

    def stop(self):
        self._stopped.set()
        self.driver.cleanup()
