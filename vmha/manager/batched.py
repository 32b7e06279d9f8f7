"""One blocking job per batch of domains, for the monitors' discovery.

When the agent starts on a host of thousands of domains, each monitor
reads something of every domain (the guest-agent monitor its XML, the
heartbeat monitor its channel's path).  One pool job per domain means
thousands of round trips and as many native threads contending with the
power-state audit for the interpreter; ``Batcher`` instead queues the
domains and runs one job at a time for up to ``size`` of them, so a
monitor's discovery costs a few jobs and one thread.

The job calls ``function(uuids, *args)``, a driver's batch call that
answers a dict of each uuid to its result or to the error its read
raised (``vmha.virt.driver.VirtDriver.describe_guests``).  ``finished``
turns a batch's answer into one ``concurrency.Job`` per domain, as if
each had been a job of its own, for the monitor's usual handler.
"""

import collections

from vmha import concurrency

SIZE = 250  # domains per job


class Batcher:
    """:param submit: the monitor's ``callable(key, function, *args)``
        (``NativePool.submit``)
    :param kind: the per-domain job kind (``key[0]`` of each finished
        job); the batch's own key is ``(kind + '*', None)``
    :param function: ``callable(uuids, *args)`` -> {uuid: result or error}
    """

    def __init__(self, submit, kind, function, *args, size=SIZE):
        self._submit = submit
        self.kind = kind
        self.batch_kind = kind + '*'
        self._function = function
        self._args = args
        self._size = size
        self._queued = collections.OrderedDict()  # uuid -> None
        self._in_flight = None

    def __contains__(self, uuid):
        return uuid in self._queued or (
            self._in_flight is not None and uuid in self._in_flight.args[0])

    def add(self, uuid):
        """Read ``uuid`` in a coming batch (once)."""
        self._queued[uuid] = None

    def discard(self, uuid):
        self._queued.pop(uuid, None)

    def pump(self):
        """Start the next batch unless one is under way."""
        if self._in_flight is not None or not self._queued:
            return
        uuids = []
        while self._queued and len(uuids) < self._size:
            uuids.append(self._queued.popitem(last=False)[0])
        self._in_flight = self._submit((self.batch_kind, None),
                                       self._function, uuids, *self._args)

    def finished(self, job):
        """The per-domain jobs of the batch ``job``; starts the next."""
        if job is not self._in_flight:
            return []
        self._in_flight = None
        jobs = []
        found = job.result if job.error is None else {}
        for uuid in job.args[0]:
            one = concurrency.Job((self.kind, uuid), None, (), job.submitted)
            one.finished = job.finished
            one.done = True
            if job.error is not None:
                one.error = job.error
            else:
                value = found.get(uuid)
                if isinstance(value, Exception):
                    one.error = value
                else:
                    one.result = value
            jobs.append(one)
        self.pump()
        return jobs
