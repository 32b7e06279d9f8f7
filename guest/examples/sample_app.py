#!/usr/bin/env python3
"""A sample application heartbeating through vmha-guest.

It registers as NAME, heartbeats from a thread, reports itself
unhealthy while the file UNHEALTHY_FLAG exists (its first line is the
reason), and rejects a stop or reboot vote while the file BUSY_FLAG
exists.  Kill it with SIGKILL and the guest answers the host's next
challenges "unhealthy" naming it; stop it with SIGTERM or Ctrl-C and it
unregisters first, which is no failure.

    python3 sample_app.py --name billing --interval-ms 1000
"""

import argparse
import os
import signal
import sys
import threading

try:
    import vmha_guest_client
except ImportError:                 # run from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(
        os.path.abspath(__file__)), '..'))
    import vmha_guest_client


def first_line(path):
    try:
        with open(path) as flag:
            return flag.readline().strip()
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--name', default='sample-app')
    parser.add_argument('--interval-ms', type=int, default=1000)
    parser.add_argument('--corrective-action', default='reboot',
                        choices=['log', 'reboot', 'stop'])
    parser.add_argument('--socket', default=vmha_guest_client.DEFAULT_SOCKET)
    parser.add_argument('--unhealthy-flag',
                        default='/run/sample-app.unhealthy')
    parser.add_argument('--busy-flag', default='/run/sample-app.busy')
    args = parser.parse_args()

    def health_check():
        reason = first_line(args.unhealthy_flag)
        if reason is None:
            return True, ''
        return False, reason or 'flagged unhealthy'

    def on_action(event, notification, phase):
        print('%s: %s %s %s' % (args.name, phase, notification, event),
              flush=True)
        if notification == 'revocable' and event in ('stop', 'reboot'):
            reason = first_line(args.busy_flag)
            if reason is not None:
                return False, reason or '%s is busy' % args.name
        return True, ''

    client = vmha_guest_client.HeartbeatClient(
        args.name, interval_ms=args.interval_ms,
        corrective_action=args.corrective_action, on_action=on_action,
        health_check=health_check, socket_path=args.socket)
    client.start()
    print('%s registered (corrective action granted: %s)'
          % (args.name, client.granted_action), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    client.stop()
    print('%s unregistered' % args.name, flush=True)


if __name__ == '__main__':
    main()
