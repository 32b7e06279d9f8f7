"""vmha-agent's write-and-send path, in a process of its own.

vmha-agent on ``test:///default`` cannot be driven from outside: that
driver's domains live inside the process that opened it.  So the
integration tests run this script instead.  It does what the agent does
once it has decided that an instance failed: it writes an
``instance.failure`` notification into the journal's outbox, one
transaction per failure, and delivers the outbox with an ``OutboxSender``
through the sinks that ``[notifications] sinks`` names, all with the
agent's own code, configuration file format and concurrency backend::

    python -m tests.integration.outbox_agent --config-file agent.conf \\
        [--write UUID ...] [--stdin] [--send] [--die-after commit|send]

``--write`` writes one failure per UUID; ``--stdin`` then writes one for
each UUID read from standard input, as lines arrive, until end of file.
Each written failure prints ``written MESSAGE_ID UUID``.  ``--send`` runs
the sender meanwhile; the script exits 0 once the input is over and the
outbox is empty (3 when ``--timeout`` passes first).

``--die-after commit`` SIGKILLs the process right after the writes have
committed, before anything is sent; ``--die-after send`` right after the
sink has sent the first notification, before the outbox marks it
delivered.  Those are the two moments where an agent crash must not lose
a failure, nor report it twice.
"""

import argparse
import datetime
import os
import signal
import sys
import time

from vmha import cmd
from vmha import concurrency
from vmha.cmd import agent as agent_cmd


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='outbox_agent')
    parser.add_argument('--config-file', required=True)
    parser.add_argument('--write', nargs='*', default=[], metavar='UUID')
    parser.add_argument('--stdin', action='store_true')
    parser.add_argument('--send', action='store_true')
    parser.add_argument('--die-after', choices=('commit', 'send'))
    parser.add_argument('--timeout', type=float, default=300.0)
    return parser.parse_args(argv)


def die():
    """What a crash looks like: no cleanup, no flush beyond this line."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conf = agent_cmd.parse_config(['--config-file', args.config_file])
    # As vmha-agent does: commit to the backend before oslo_messaging is
    # imported (eventlet is monkey patched here, as in the agent).
    cmd.select_backend(conf.concurrency_backend)
    from oslo_log import log
    log.setup(conf, 'vmha')

    from vmha import objects
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.notify import sinks
    from vmha.objects import instance

    backend = concurrency.get(conf.concurrency_backend)
    objects.register_all()
    journal = db.Journal.from_conf(conf)
    outbox = outbox_lib.Outbox(journal)

    def write(uuid):
        now = datetime.datetime.now(datetime.UTC)
        message = instance.failure_notification(
            conf.host, uuid, 'vm-%s' % uuid[:8], 'LIFECYCLE',
            'STOPPED_FAILED', 'qemu_died', now,
            evidence='libvirt: LIFECYCLE STOPPED_FAILED; domain now '
                     'SHUTOFF_FAILED').to_message()
        # One decision, one transaction: the agent's unit of durability.
        with journal.transaction() as tx:
            outbox.add(tx, message)
        print('written %s %s' % (message.message_id, uuid), flush=True)

    for uuid in args.write:
        write(uuid)
    if args.die_after == 'commit':
        die()

    sender = None
    if args.send:
        sink = sinks.load_sink(conf)
        if args.die_after == 'send':
            sink = _DieAfterSend(sink)
        sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
        sender.start()

    if args.stdin:
        _write_from_stdin(write, lambda: backend.sleep(0.02))

    status = 0
    if sender is not None:
        deadline = time.monotonic() + args.timeout
        while outbox.depth():
            if time.monotonic() > deadline:
                print('timeout: %d notification(s) not delivered'
                      % outbox.depth(), flush=True)
                status = 3
                break
            backend.sleep(0.05)
        sender.stop()
        sender.sink.close()
        if status == 0:
            print('drained: %d sent' % sender.sent_total, flush=True)
    journal.close()
    return status


def _write_from_stdin(write, pause):
    """Write a failure for each UUID line on stdin, until end of file.

    Non-blocking reads with a backend sleep in between: a blocking read
    would stop eventlet's hub, and with it the sender, while the test
    takes its time to send the next lines.
    """
    os.set_blocking(sys.stdin.fileno(), False)
    pending = b''
    while True:
        try:
            chunk = os.read(sys.stdin.fileno(), 65536)
        except BlockingIOError:
            pause()
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for line in lines:
            if line.strip():
                write(line.strip().decode())
    if pending.strip():
        write(pending.strip().decode())


class _DieAfterSend:
    """Wraps the real sink: the first send goes out, then the process
    dies before the outbox can mark it delivered."""

    def __init__(self, sink):
        self._sink = sink
        self.name = sink.name

    def send(self, message):
        self._sink.send(message)
        print('sent %s' % message.message_id, flush=True)
        die()

    def close(self):
        self._sink.close()


if __name__ == '__main__':
    sys.exit(main())
