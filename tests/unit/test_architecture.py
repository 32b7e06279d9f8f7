"""The package arrows of vmha, read from the source and checked.

Each package (or top-level module) of ``vmha`` may import only those on
its line of ``ALLOWED`` (and itself); everything else would run an arrow
back up, from delivery into policy or from policy into the surfaces that
show it.  In words:

* ``virt`` faces the hypervisor and knows none of its consumers: no
  policy, messaging, journal or objects.  Only ``vmha/virt/libvirt/
  api.py`` imports ``libvirt``.
* ``objects`` are versioned data; ``notify`` (message formats and sinks)
  and ``masakari`` (its client and vocabulary) deliver them; the
  ``journal`` keeps state and the outbox.
* ``manager`` is policy: it uses virt, objects and the journal and never
  the surfaces (``api``), the composition (``agent``) or ``cmd``.
* ``api`` (HTTP, RPC) shows and switches what the manager holds; ``agent``
  wires manager and api together; ``cmd`` starts the binaries and is the
  only place that reads oslo.config's global ``cfg.CONF``.
* No product module imports the test tree.
* The rules written as pure tables and functions (``PURE``) import no
  clock, no I/O, no threads and no logging.

Every import counts, also those inside functions (the binaries import
late, after choosing the concurrency backend).
"""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'vmha'

#: layer -> the other layers it may import.
ALLOWED = {
    'vmha': set(),
    'backoff': set(),
    'concurrency': set(),
    'conf': set(),
    'systemd': set(),
    'timestamps': set(),
    'supervision': set(),
    'virt': {'backoff', 'concurrency', 'supervision', 'timestamps'},
    'masakari': {'backoff'},
    'notify': {'backoff', 'concurrency', 'masakari'},
    'objects': {'notify'},
    'journal': {'backoff', 'concurrency', 'notify', 'supervision'},
    'manager': {'backoff', 'concurrency', 'conf', 'journal', 'objects',
                'supervision', 'timestamps', 'virt'},
    'rpcapi': {'conf', 'manager'},
    'api': {'concurrency', 'conf', 'manager', 'rpcapi'},
    'agent': {'api', 'concurrency', 'conf', 'manager'},
    'bridge': {'api', 'backoff', 'concurrency', 'conf', 'masakari',
               'notify', 'objects', 'rpcapi'},
    'demo': {'api', 'concurrency', 'conf', 'manager', 'masakari', 'notify',
             'virt'},
    'cmd': {'agent', 'api', 'backoff', 'bridge', 'concurrency', 'conf',
            'demo', 'journal', 'manager', 'masakari', 'notify', 'objects',
            'rpcapi', 'systemd', 'virt'},
}

#: The one module that may import the libvirt bindings.
LIBVIRT_SEAM = 'vmha.virt.libvirt.api'

#: Rules as pure tables and functions: their callers pass the time and do
#: the I/O, so tests drive them by hand.  They import no clock, no I/O,
#: no threads and no logging (the caller logs what they return).
PURE = ('vmha.manager.decisions', 'vmha.manager.evidence',
        'vmha.manager.guest_states', 'vmha.manager.migration_policy',
        'vmha.virt.libvirt.migration_xml')
IMPURE = ('time', 'datetime', 'os', 'socket', 'select', 'subprocess',
          'threading', 'eventlet', 'libvirt', 'sqlite3', 'random',
          'logging', 'vmha.backoff', 'vmha.concurrency', 'vmha.journal',
          'vmha.notify', 'vmha.supervision')


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


MODULES = {module_name(path): path
           for path in sorted(PACKAGE.rglob('*.py'))}


def layer(module):
    """'vmha.virt.libvirt.api' -> 'virt'; 'vmha.agent' -> 'agent'."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else parts[0]


def imported(path):
    """The names ``path`` imports (``from a import b``: ``a.b`` when that
    is a vmha module, else ``a``), with their line numbers."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for alias in node.names:
                full = '%s.%s' % (node.module, alias.name)
                names.append((full if full in MODULES else node.module,
                              node.lineno))
    return names


def test_the_table_names_every_layer():
    assert {layer(module) for module in MODULES} == set(ALLOWED)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_run_one_way(module):
    source = layer(module)
    allowed = ALLOWED[source] | {source}
    wrong = ['line %d: %s' % (line, name)
             for name, line in imported(MODULES[module])
             if name.split('.')[0] == 'vmha' and layer(name) not in allowed]
    assert not wrong, '%s (%s) may import only %s, not: %s' % (
        module, source, ', '.join(sorted(allowed)), '; '.join(wrong))


@pytest.mark.parametrize('module', sorted(MODULES))
def test_no_product_module_imports_the_tests(module):
    wrong = ['line %d: %s' % (line, name)
             for name, line in imported(MODULES[module])
             if name.split('.')[0] == 'tests']
    assert not wrong, '%s imports the test tree: %s' % (module, wrong)


@pytest.mark.parametrize('module', PURE)
def test_pure_rules_import_no_clock_and_no_io(module):
    wrong = ['line %d: %s' % (line, name)
             for name, line in imported(MODULES[module])
             if any(name == impure or name.startswith(impure + '.')
                    for impure in IMPURE)]
    assert not wrong, '%s is pure rules, yet imports %s' % (
        module, '; '.join(wrong))


def test_only_the_seam_imports_libvirt():
    importers = sorted(module for module, path in MODULES.items()
                       if any(name.split('.')[0] == 'libvirt'
                              for name, _ in imported(path)))
    assert importers == [LIBVIRT_SEAM]


def test_nothing_below_cmd_reads_the_global_conf():
    readers = []
    for module, path in MODULES.items():
        if layer(module) == 'cmd':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == 'CONF' or \
                    isinstance(node, ast.ImportFrom) and any(
                        alias.name == 'CONF' for alias in node.names):
                readers.append('%s line %d' % (module, node.lineno))
    assert not readers
