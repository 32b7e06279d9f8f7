"""Write doc/notifications.md from doc/notification_samples/*.json.

The reference lists, for each sample, its event type, priority, publisher,
when vmha sends it, a table of its payload fields and the sample itself.
Everything but the "when" text comes from the sample files, so the page
cannot drift from what vmha sends: the samples are checked against the
code by tests/functional/test_notification_samples.py, and this page
against the samples by tests/functional/test_notification_reference.py.

Usage::

    python tools/notification_reference.py            # write the page
    python tools/notification_reference.py --check    # exit 1 if stale

A sample whose event type has no entry in ``DESCRIPTIONS`` below is an
error: add a description when you add a notification.  Standard library
only, so it runs without the project's virtualenv.
"""

import argparse
import difflib
import json
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = ROOT / 'doc' / 'notification_samples'
DEFAULT_OUTPUT = ROOT / 'doc' / 'notifications.md'
REGENERATE = 'python tools/notification_reference.py'
# How much of the difference --check shows.
DIFF_LINES = 40

# Hand-written, per event type: the priorities vmha uses for it and when
# it is sent.  The rest of the page comes from the samples.
DESCRIPTIONS = {
    'instance.failure': {
        'priorities': ('ERROR',),
        'when': (
            'vmha decided that an instance failed: its QEMU process died, '
            'the guest panicked, an I/O error or the watchdog stopped it, '
            'or the guest-agent monitor judged it hung. vmha reads the '
            'domain state again before it decides, and sends a failure '
            'Masakari should recover once per failure episode. Such a '
            'failure carries one of the three pairs Masakari recovers in '
            '`event` and `vir_domain_event`: `LIFECYCLE` / '
            '`STOPPED_FAILED`, `IO_ERROR` / `IO_ERROR_REPORT` or '
            '`QEMU_GUEST_AGENT_ERROR` / `STOPPED_FAILED`. A failure '
            'Masakari must not act on keeps its own libvirt names (a '
            'watchdog that reset the guest: `WATCHDOG` / '
            '`WATCHDOG_RESET`; a control error on a running domain: '
            '`CONTROL_ERROR` / `UNKNOWN`; a running domain that vanished '
            'while the agent was away: `LIFECYCLE` / `UNDEFINED_UNSEEN`), '
            'and the bridge ignores it. `cause` (one of `qemu_died`, '
            '`guest_panic`, `io_error`, `watchdog`, `control_error`, '
            '`guest_hung`, `vanished`, `crashed`, `heartbeat_lost`, '
            '`guest_unhealthy`, `postcopy_failed`: a live migration '
            'failed after its switch to post-copy, the VM cannot run on '
            'either host) and `evidence` keep the real cause; a '
            'heartbeat failure vmha stopped itself (corrective action '
            '`stop`) is `LIFECYCLE` / `STOPPED_DESTROYED`, which Masakari '
            'records and does not recover. `episode` names the failure '
            'episode a recoverable failure opened: a resend carries the '
            'same id, a new failure '
            'of the instance a new one (null for a failure Masakari does '
            'not act on). Those others are rate-limited: repeats of one '
            'instance and cause within `[notifications] repeat_window`, '
            'and any beyond `[notifications] '
            'max_error_notifications_per_minute` a minute, are not sent; '
            '`suppressed` counts the ones of this instance and cause left '
            'unsent since the previous one sent. vmha-masakari-bridge '
            'forwards these notifications to Masakari; in direct mode the '
            'agent posts them itself.'),
    },
    'instance.lifecycle': {
        'priorities': ('INFO',),
        'when': (
            'The power state of a monitored instance changed, whoever '
            'changed it: a boot, a shutdown, a destroy, a pause, a '
            'migration, a failure. One is sent per transition. It is '
            'information only: nothing recovers an instance because of '
            'it.'),
    },
    'instance.monitoring': {
        'priorities': ('WARN', 'INFO'),
        'when': (
            'An operator\'s monitoring choice for one instance changed, '
            'written in the same journal transaction as the choice. '
            '`enabled` is the choice now (`true`: monitored, `false`: '
            'not monitored, `null`: no choice, the metadata and name '
            'rules decide) and `previous` the one before. `source`: '
            '`rpc` (`set_monitoring`; `requested_by` holds the user, '
            'project and request id of the RPC context), `metadata` (the '
            'choice came with the domain\'s metadata, for example after '
            'a live migration, and was adopted; `requested_by` is who set '
            'it at the source), `undefined` (the domain was undefined on '
            'this host) or `vanished` (the audit found it gone): the '
            'last two drop the choice. WARN when monitoring is turned '
            'off, INFO otherwise.'),
    },
    'instance.action': {
        'priorities': ('INFO', 'WARN', 'ERROR'),
        'when': (
            'One phase of a lifecycle action asked for over RPC '
            '(`request_action`, `vmha-action`) ended; every phase of one '
            'action carries the same `action_id`. `phase`: `vote` (the '
            'heartbeat guest may reject the action), `pre` (it is told '
            'the action will happen and its handlers run), `action` (the '
            'action itself through libvirt; `skipped` where the caller '
            'performs it: `--vote-only`, resize and migrations), `post` '
            '(it is told the action happened). `result`: `accepted` or '
            '`rejected` for a vote (a guest that does not answer in time, '
            'or no heartbeat guest at all, accepts), `done`, `failed` or '
            '`skipped` for the others; `reason` says why, in the guest\'s '
            'own words for a rejection; `requested_by` holds the user, '
            'project and request id of the RPC context; `took_ms` how '
            'long the phase took. WARN for a rejected vote (the action '
            'did not happen), ERROR for a failed action, INFO otherwise.'),
    },
    'instance.heartbeat': {
        'priorities': ('INFO', 'WARN', 'ERROR'),
        'when': (
            'The guest heartbeat of a VM changed state (see '
            '[the protocol](heartbeat-protocol.md)). ERROR: the heartbeat '
            'failed (challenges unanswered, or the guest reported itself '
            'unhealthy); `action_taken` says what vmha did: `reboot` or '
            '`stop` when it acted itself (then no failure goes to '
            'Masakari for a reboot), `log` when the failure was reported '
            'to Masakari as an `instance.failure`. WARN: the guest was cut '
            'off for breaking the protocol\'s limits (flooding, garbage, '
            'not reading); never a VM failure. INFO: registered, enabled, '
            'recovered, paused, exited on purpose. `state` and '
            '`old_state` are one of `waiting`, `enabling`, `enabled`, '
            '`failed`, `paused`, `exited`, `cut_off`, `disconnected`.'),
    },
    'instance.migration': {
        'priorities': ('INFO', 'ERROR'),
        'when': (
            'A live migration of an instance, seen from this host '
            '(`direction` `outgoing` on the source, `incoming` on the '
            'destination), whoever started it. `phase` `start` when it '
            'is first seen, `progress` when a memory iteration begins, '
            'when it switches to post-copy, or when vmha acts on it '
            '(`action`: `set_downtime` for a downtime step of a migration '
            'vmha drives, `abort`, `force_complete_postcopy` or '
            '`pause_guest` past the completion timeout or when stalled, '
            'an operator\'s task; `reason` says why), `end` when it '
            'completed, `error` (ERROR) when it failed or was aborted: '
            '`action` `resume_source` when vmha resumed a source the '
            'failure left paused. The figures are libvirt\'s job '
            'statistics on the source (null on the destination); '
            '`downtime_ms` is the maximum downtime vmha last set; '
            '`destination` is known for migrations vmha drives '
            '(`driven`). Information only: a failed post-copy migration '
            'is reported by an `instance.failure` with cause '
            '`postcopy_failed`.'),
    },
    'guest.health': {
        'priorities': ('INFO', 'WARN', 'ERROR'),
        'when': (
            'The guest-agent monitor changed its view of a guest. ERROR: '
            'the guest was judged hung (an `instance.failure` goes out '
            'too), or a corrective action failed. WARN: the guest agent '
            'does not answer but the guest still runs (host-side '
            'evidence shows CPU time or I/O), or the agent never answered '
            'within `[guest_agent] discovery_timeout` after boot (state '
            '`discovery`). INFO: a reported guest answers again. `state` '
            'and `old_state` are one of `discovery`, `healthy`, `error`, '
            '`reported`, `suppressed`; `reason` holds the evidence.'),
    },
    'instance.recovery': {
        'priorities': ('INFO', 'WARN'),
        'when': (
            'Sent by vmha-masakari-bridge (publisher '
            '`vmha-masakari-bridge:<its host>`) at each change of what '
            'Masakari made of a failure it forwarded, once per status and '
            'in order: `accepted` (Masakari answered 202; its notification '
            'id is `notification_uuid`), `running`, then one of '
            '`finished`, `failed` or `ignored` (Masakari\'s own '
            'outcomes, read by polling `GET /v1/notifications/{id}` with '
            'a bounded backoff); or `rejected` at once when Masakari '
            'answered 400 or 409 (`reason` holds its words). Masakari\'s '
            '`error` counts as `running` while its engine may retry it, '
            'and as `failed` once it lasted longer than `[bridge] '
            'recovery_error_timeout`; a recovery with no outcome after '
            '`[bridge] recovery_give_up` hours is `failed` too, saying '
            'so. `host` is the compute host of the failure, `episode` its '
            'failure episode, `took` the seconds from vmha\'s detection to '
            'this status, `workflow_details` Masakari\'s recovery '
            'workflow steps (microversion 1.1) when it gave them, else '
            'null. WARN for `failed` and `rejected`, INFO otherwise. The '
            'same instance, episode and status always carry the same '
            'message id, so a re-publication after a bridge restart can '
            'be dropped.'),
    },
    'host.connection': {
        'priorities': ('WARN', 'INFO'),
        'when': (
            'The agent lost its libvirt connection (WARN, `state` `lost`, '
            '`reason` such as `EOF` or `KEEPALIVE`): until it is back, no '
            'event is seen. Or the connection came back (INFO, `state` '
            '`restored`, with `outage_seconds` and `attempts` set); the '
            'agent then runs an audit at once.'),
    },
}

_UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                   r'[0-9a-f]{12}$')
_DATETIME = re.compile(r'^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?'
                       r'(Z|[+-]\d\d:?\d\d)?$')
_OBJECT_DATA = 'vmha_object.data'


class SampleError(Exception):
    """A sample cannot be documented."""


def json_type(value):
    """The JSON type of ``value``, with string formats made visible."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        if _UUID.match(value):
            return 'string (uuid)'
        if _DATETIME.match(value):
            return 'string (date-time)'
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def payload_fields(data, prefix=''):
    """(name, type, example) rows of a payload's data, nested objects
    flattened into dotted names."""
    rows = []
    for name in sorted(data):
        value = data[name]
        if isinstance(value, dict) and _OBJECT_DATA in value:
            value = value[_OBJECT_DATA]
        if isinstance(value, dict) and value:
            rows.extend(payload_fields(value, prefix + name + '.'))
        else:
            rows.append((prefix + name, json_type(value), value))
    return rows


def _cell(value):
    text = json.dumps(value, sort_keys=True)
    # A pipe would end the table cell.
    return '`%s`' % text.replace('|', '\\|')


def load_samples(samples_dir):
    """[(path, sample)] for every *.json in ``samples_dir``, by event type
    then file name."""
    paths = sorted(pathlib.Path(samples_dir).glob('*.json'))
    if not paths:
        raise SampleError('no *.json samples in %s' % samples_dir)
    samples = []
    for path in paths:
        try:
            sample = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, ValueError) as error:
            raise SampleError('%s: cannot read: %s' % (path.name, error))
        for key in ('event_type', 'priority', 'publisher_id', 'payload'):
            if not isinstance(sample, dict) or key not in sample:
                raise SampleError('%s: no %r key: not a notification '
                                  'sample' % (path.name, key))
        event_type = sample['event_type']
        if event_type not in DESCRIPTIONS:
            raise SampleError(
                '%s: event type %r has no description: add one to '
                'DESCRIPTIONS in tools/notification_reference.py'
                % (path.name, event_type))
        if sample['priority'] not in DESCRIPTIONS[event_type]['priorities']:
            raise SampleError(
                '%s: priority %r is not among the priorities documented '
                'for %s (%s): update DESCRIPTIONS in '
                'tools/notification_reference.py' % (
                    path.name, sample['priority'], event_type,
                    ', '.join(DESCRIPTIONS[event_type]['priorities'])))
        samples.append((path, sample))
    samples.sort(key=lambda item: (item[1]['event_type'], item[0].name))
    return samples


def _anchor(event_type):
    return event_type.replace('.', '')


def render(samples_dir):
    """The Markdown page for the samples in ``samples_dir``."""
    samples = load_samples(samples_dir)
    out = [
        '<!-- Generated by tools/notification_reference.py from',
        '     doc/notification_samples/*.json. Do not edit by hand: run',
        '     %s -->' % REGENERATE,
        '',
        '# Notification reference',
        '',
        'vmha-agent sends these notifications. Each one is first written to',
        'the local journal, then delivered by the outbox to every sink in',
        '`[notifications] sinks`. On the bus (`messaging` sink) a',
        'notification of priority P goes to topic `<topic>.<p>` on exchange',
        '`vmha`, with the default topic `versioned_notifications`:',
        '`instance.failure` goes to `versioned_notifications.error`. The',
        'message is what oslo.messaging\'s `messagingv2` driver sends.',
        '',
        'Every message has these keys:',
        '',
        '| key | meaning |',
        '|---|---|',
        '| `event_type` | `object.action`, as in the sections below |',
        '| `priority` | `INFO`, `WARN` or `ERROR` |',
        '| `publisher_id` | `vmha-agent:<host>`, with `[DEFAULT] host` |',
        '| `message_id` | a UUID; a resend keeps it, so consumers can '
        'drop duplicates |',
        '| `timestamp` | when the notification was made, UTC |',
        '| `payload` | an oslo.versionedobjects payload: '
        '`vmha_object.name`, `vmha_object.namespace` (`vmha`), '
        '`vmha_object.version` and the fields in `vmha_object.data` |',
        '',
        'A consumer should check `vmha_object.name` and the major part of',
        '`vmha_object.version`. A minor version adds fields and keeps the',
        'old ones.',
        '',
        '| event type | priorities | payload | sample |',
        '|---|---|---|---|',
    ]
    for path, sample in samples:
        event_type = sample['event_type']
        payload = sample['payload']
        out.append('| [`%s`](#%s) | %s | `%s` %s | [%s](%s) |' % (
            event_type, _anchor(event_type),
            ', '.join(DESCRIPTIONS[event_type]['priorities']),
            payload.get('vmha_object.name', '?'),
            payload.get('vmha_object.version', '?'),
            path.name, 'notification_samples/' + path.name))
    for path, sample in samples:
        event_type = sample['event_type']
        payload = sample['payload']
        description = DESCRIPTIONS[event_type]
        data = payload.get(_OBJECT_DATA, payload)
        out += [
            '',
            '## %s' % event_type,
            '',
            '- Priority: `%s` in this sample; sent as %s.' % (
                sample['priority'],
                ', '.join('`%s`' % p for p in description['priorities'])),
            '- Publisher: `%s`.' % sample['publisher_id'],
            '- Payload: `%s`, version %s.' % (
                payload.get('vmha_object.name', '?'),
                payload.get('vmha_object.version', '?')),
            '- Sample: [`%s`](%s).' % (
                path.name, 'notification_samples/' + path.name),
            '',
            textwrap.fill('**When it is sent.** ' + description['when'],
                          width=72, break_long_words=False,
                          break_on_hyphens=False),
            '',
            '| field | type | example |',
            '|---|---|---|',
        ]
        for name, kind, value in payload_fields(data):
            out.append('| `%s` | %s | %s |' % (name, kind, _cell(value)))
        out += [
            '',
            '```json',
            json.dumps(sample, indent=4, sort_keys=True),
            '```',
        ]
    return '\n'.join(out) + '\n'


def _shown(path):
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='notification_reference.py',
        description='Write the notification reference from the samples.')
    parser.add_argument('--samples', type=pathlib.Path,
                        default=DEFAULT_SAMPLES,
                        help='directory of the JSON samples '
                             '(default: doc/notification_samples)')
    parser.add_argument('--output', type=pathlib.Path,
                        default=DEFAULT_OUTPUT,
                        help='the Markdown file (default: '
                             'doc/notifications.md)')
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 if the file is not '
                             'what the samples make')
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        text = render(args.samples)
    except SampleError as error:
        sys.stderr.write('%s: %s\n' % (prog, error))
        return 1
    if not args.check:
        args.output.write_text(text, encoding='utf-8')
        print('wrote %s' % _shown(args.output))
        return 0
    try:
        current = args.output.read_text(encoding='utf-8')
    except FileNotFoundError:
        sys.stderr.write('%s: %s is missing: run %s\n'
                         % (prog, _shown(args.output), REGENERATE))
        return 1
    if current == text:
        print('%s is up to date' % _shown(args.output))
        return 0
    shown = _shown(args.output)
    diff = list(difflib.unified_diff(
        current.splitlines(keepends=True), text.splitlines(keepends=True),
        '%s (now)' % shown, '%s (from the samples)' % shown, n=1))
    sys.stderr.write('%s: %s is stale: it does not match the samples. '
                     'Run %s\n' % (prog, shown, REGENERATE))
    sys.stderr.writelines(diff[:DIFF_LINES])
    if len(diff) > DIFF_LINES:
        sys.stderr.write('... (%d more diff lines)\n'
                         % (len(diff) - DIFF_LINES))
    return 1


if __name__ == '__main__':
    sys.exit(main())
