"""The status table: what ``vmha-status`` and the demo print.

``render(status)`` takes the ``/status`` body (``AgentService.status()``)
and returns text: one health line, then one row per domain.
"""

import datetime

COLUMNS = ('NAME', 'UUID', 'POWER', 'MONITORING', 'GUEST AGENT',
           'LAST PING', 'HEARTBEAT', 'LAST DECISION', 'RECOVERY',
           'MIGRATING')


def health_line(status):
    """'vmha-agent on HOST: healthy (...)' or '...: UNHEALTHY: why'."""
    health = status.get('health') or {}
    checks = health.get('checks', {})
    parts = []
    dispatcher = checks.get('dispatcher')
    if dispatcher:
        parts.append('dispatcher %s %.1fs ago' % (
            'turned over' if dispatcher['ok'] else 'STALLED, last turned over',
            dispatcher['age']))
    audit = checks.get('audit')
    if audit:
        parts.append('%d audit(s)%s' % (audit['runs'], '' if audit['ok']
                                        else ', audit loop STALLED'))
    guests = checks.get('guest_agent')
    if guests and not guests['ok']:
        parts.append('guest-agent loop STALLED for %.1fs' % guests['age'])
    beats = checks.get('heartbeat')
    if beats and not beats['ok']:
        parts.append('heartbeat loop STALLED for %.1fs' % beats['age'])
    journal = checks.get('journal')
    if journal and not journal['ok']:
        parts.append('journal NOT WRITABLE for %ss, %d write(s) waiting'
                     % (journal['failing_for'], journal['pending']))
    libvirt = checks.get('libvirt')
    if libvirt:
        parts.append('libvirt connected' if libvirt['connected'] else
                     'libvirt DISCONNECTED for %ss'
                     % libvirt['disconnected_for'])
    state = 'healthy' if health.get('status') == 'ok' else 'UNHEALTHY'
    return 'vmha-agent on %s: %s (%s)' % (status.get('host', '?'), state,
                                          ', '.join(parts))


def render(status, now=None):
    """The health line and the table, as one string."""
    now = now or datetime.datetime.now(datetime.UTC)
    rows = [COLUMNS]
    for row in status.get('instances', []):
        rows.append(_cells(row, now))
    lines = [health_line(status)]
    if len(rows) == 1:
        lines.append('no domains on this host')
        return '\n'.join(lines) + '\n'
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        lines.append('  '.join(cell.ljust(width) for cell, width
                               in zip(row, widths, strict=True)).rstrip())
    return '\n'.join(lines) + '\n'


def _cells(row, now):
    monitoring = row.get('monitoring') or '-'
    override = row.get('override')
    if override and override.get('reason'):
        monitoring += ' (%s)' % override['reason']
    power = row.get('power_state') or '-'
    if row.get('state_reason') and row.get('power_state') != 'running':
        power = row['state_reason'].lower()
    ping = '-'
    if row.get('last_ping_at'):
        ping = _ago(row['last_ping_at'], now)
        if row.get('last_ping_latency') is not None:
            ping += ' (%.0f ms)' % (row['last_ping_latency'] * 1000)
    decision = '-'
    if row.get('last_decision'):
        decision = '%s %s' % (row['last_decision'],
                              _ago(row.get('last_decision_at'), now))
        if row.get('failure_open'):
            decision += ', open'
    return (row.get('name') or '-', row.get('uuid') or '-', power,
            monitoring, row.get('guest_agent') or '-', ping,
            row.get('heartbeat') or '-', decision,
            recovery_cell(row.get('recovery')),
            row.get('migrating') or '-')


def recovery_cell(recovery):
    """accepted / running / finished 14.2s / failed: reason / ignored /
    rejected: reason; '-' when Masakari has said nothing (yet)."""
    if not recovery or not recovery.get('status'):
        return '-'
    status = recovery['status']
    if status == 'finished' and recovery.get('took') is not None:
        return 'finished %.1fs' % recovery['took']
    if status in ('failed', 'rejected') and recovery.get('reason'):
        return '%s: %s' % (status, recovery['reason'])
    return status


def _ago(text, now):
    if not text:
        return ''
    try:
        then = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return '%ds ago' % seconds
    if seconds < 7200:
        return '%dm ago' % (seconds // 60)
    return '%dh ago' % (seconds // 3600)
