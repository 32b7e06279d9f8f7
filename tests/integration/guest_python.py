"""The Python of the heartbeat test guest: the host's own python3.11 and
only the parts of its standard library the guest daemon needs.

The daemon (``guest/vmha_guest*`` of the checkout, stdlib only) runs in
the test guest's initramfs.  Shipping the whole standard library would
triple the image and slow every boot under TCG, so the image carries the
modules the daemon imports and what those pull in, found the way the
daemon itself would find them: every ``import`` in its sources (at the
top or inside a function) is imported by the same interpreter, started
the way the guest starts it (``-S``), and what lands in ``sys.modules``
is the list.  A new import in the daemon therefore changes the image by
itself; one that is not in the standard library stops the build with a
message naming it.

Every ``.py`` is compiled here by that interpreter: the standard library
as sourceless ``.pyc`` files (no source to check against, so no
recompiling at boot: the initramfs has no timestamps), the daemon's own
sources with an unchecked-hash ``.pyc`` beside them, so tracebacks in the
guest still show its lines.
"""

import ast
import hashlib
import os
import pathlib
import subprocess
import tempfile

from tests.integration import services

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
GUEST_SOURCE_DIR = REPOSITORY / 'guest'
PYTHON = pathlib.Path('/usr/bin/python3.11')
# Debian packages the interpreter and its standard library come from.
PYTHON_PACKAGES = ('python3.11-minimal', 'libpython3.11-minimal',
                   'libpython3.11-stdlib')
STDLIB = pathlib.PurePosixPath('/usr/lib/python3.11')
# Where the daemon's sources go in the guest; the guest's launcher
# (guest/vmha-heartbeat) runs "python3.11 -S -B -m vmha_guest" there.
GUEST_CODE_DIR = 'usr/lib/vmha-guest'
# Imported by the interpreter or the launcher, not by the daemon: the
# codecs a C-locale start may look up, and runpy for "-m".
RUNTIME_MODULES = ('encodings.ascii', 'encodings.latin_1',
                   'encodings.utf_8', 'runpy')
# What standard modules import only inside functions, on paths a daemon
# takes (argparse formats --help and errors with textwrap and shutil).
# Not followed by themselves: the standard library's lazy imports reach
# nearly all of it (logging.handlers would bring smtplib, email, ssl).
# A module missing here fails the chroot test of the image
# (test_testbed.py) with its ModuleNotFoundError.
STDLIB_LAZY_IMPORTS = {
    'argparse': ('textwrap', 'shutil', 'copy'),
}

# Run by the interpreter itself: imports what it is told and prints the
# files of every module then loaded.  It imports nothing of its own
# (sys is built in), so the list is the daemon's and the runtime's only.
# An argument "?NAME" is a maybe-module ("from package import name").
_FIND_FILES = r'''
import sys
for name in sys.argv[1:]:
    optional = name.startswith('?')
    name = name.lstrip('?')
    try:
        __import__(name)
    except ImportError as error:
        if not optional:
            print('missing %s %s' % (name, error))
for module in list(sys.modules.values()):
    path = getattr(module, '__file__', None)
    if path:
        print('file %s' % path)
'''

# Compiles "source<TAB>name shown in tracebacks<TAB>target" lines.
_COMPILE = r'''
import py_compile, sys
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
with open(sys.argv[1]) as listing:
    for line in listing.read().splitlines():
        source, shown, target = line.split('\t')
        py_compile.compile(source, target, dfile=shown, doraise=True,
                           invalidation_mode=mode)
'''


class PythonImageError(services.ServiceError):
    """The guest's Python part cannot be put together (the message says
    which module or file)."""


def guest_sources(source_dir=GUEST_SOURCE_DIR):
    """{path relative to ``source_dir``: bytes} of the daemon's Python
    files: ``vmha_guest*.py`` and every ``.py`` of ``vmha_guest*/``
    packages (examples, tests and packaging files stay out)."""
    source_dir = pathlib.Path(source_dir)
    found = {}
    for path in sorted(source_dir.glob('vmha_guest*')):
        if path.is_file() and path.suffix == '.py':
            found[path.name] = path.read_bytes()
        elif path.is_dir():
            for source in sorted(path.rglob('*.py')):
                if '__pycache__' not in source.parts:
                    found[str(source.relative_to(source_dir))] = \
                        source.read_bytes()
    if not found:
        raise PythonImageError(
            'no guest daemon in %s (vmha_guest*.py or a vmha_guest '
            'package): the heartbeat image needs it' % source_dir)
    return found


def own_module_names(sources):
    """Top-level names the daemon's own files provide."""
    return {pathlib.PurePosixPath(path).parts[0].removesuffix('.py')
            for path in sources}


def imported_names(sources):
    """(required, maybe) module names the sources import anywhere.

    ``maybe`` are the ``from package import name`` names, which are
    modules only sometimes.  Relative imports and the daemon's own
    modules are left out: they are shipped anyway.
    """
    own = own_module_names(sources)
    required, maybe = set(), set()
    for path, data in sorted(sources.items()):
        try:
            tree = ast.parse(data, filename=path)
        except SyntaxError as error:
            raise PythonImageError('guest/%s does not parse: %s'
                                   % (path, error))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                required.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level \
                    and node.module:
                required.add(node.module)
                maybe.update('%s.%s' % (node.module, alias.name)
                             for alias in node.names if alias.name != '*')
    keep = lambda name: name.split('.')[0] not in own  # noqa: E731
    return (sorted(filter(keep, required)),
            sorted(name for name in filter(keep, maybe)
                   if name not in required))


def stdlib_files(sources, python=PYTHON):
    """Absolute paths of the standard library files (``.py`` and
    extension modules) the daemon and the runtime load, sorted."""
    required, maybe = imported_names(sources)
    lazy = [name for module in required
            for name in STDLIB_LAZY_IMPORTS.get(module, ())]
    names = (list(RUNTIME_MODULES) + required + lazy
             + ['?' + n for n in maybe])
    result = subprocess.run(
        [str(python), '-S', '-B', '-E', '-s', '-c', _FIND_FILES, *names],
        capture_output=True, text=True, timeout=60, cwd='/',
        env={'PATH': '/usr/bin:/bin', 'LC_ALL': 'C'})
    if result.returncode != 0:
        raise PythonImageError('%s could not list the modules: %s'
                               % (python, result.stderr.strip()))
    files, missing = set(), []
    for line in result.stdout.splitlines():
        kind, _, rest = line.partition(' ')
        if kind == 'missing':
            missing.append(rest)
        elif kind == 'file':
            files.add(rest)
    if missing:
        raise PythonImageError(
            'the guest daemon imports what the guest cannot have (it must '
            'use the standard library only): %s' % '; '.join(missing))
    outside = sorted(f for f in files if not f.startswith(str(STDLIB) + '/'))
    if outside:
        raise PythonImageError('modules outside %s: %s'
                               % (STDLIB, ', '.join(outside)))
    return sorted(files)


def shared_libraries(paths):
    """The shared libraries the binaries ``paths`` load (ldd), the
    loader included, each once, sorted."""
    libraries = set()
    for path in paths:
        result = subprocess.run(['ldd', str(path)], capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0:
            if 'not a dynamic executable' in result.stdout + result.stderr:
                continue
            raise PythonImageError('ldd %s: %s'
                                   % (path, result.stderr.strip()))
        for line in result.stdout.splitlines():
            words = [w for w in line.split() if w.startswith('/')]
            if words:
                libraries.add(words[0])
    return sorted(libraries)


def compile_files(pairs, python=PYTHON):
    """Compile ``(source path, name shown in tracebacks)`` pairs with
    ``python`` itself (so the bytecode fits the guest's interpreter);
    return the ``.pyc`` bytes in the same order."""
    with tempfile.TemporaryDirectory(prefix='vmha-pyc-') as scratch:
        lines, targets = [], []
        for index, (source, shown) in enumerate(pairs):
            target = os.path.join(scratch, '%d.pyc' % index)
            targets.append(target)
            lines.append('%s\t%s\t%s' % (source, shown, target))
        listing = os.path.join(scratch, 'listing')
        pathlib.Path(listing).write_text('\n'.join(lines))
        result = subprocess.run(
            [str(python), '-S', '-B', '-E', '-s', '-c', _COMPILE, listing],
            capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise PythonImageError('compiling the guest Python failed: %s'
                                   % result.stderr.strip()[-2000:])
        return [pathlib.Path(t).read_bytes() for t in targets]


def cache_tag(python=PYTHON):
    """``cpython-311`` for python3.11: the name part of its .pyc files."""
    version = pathlib.Path(python).name.removeprefix('python')
    return 'cpython-' + version.replace('.', '')


def inputs(source_dir=GUEST_SOURCE_DIR, python=PYTHON):
    """What the Python part is made of, for the image's key and manifest.
    """
    sources = guest_sources(source_dir)
    stdlib = stdlib_files(sources, python)
    binaries = [str(python)] + [f for f in stdlib if f.endswith('.so')]
    libraries = {}
    for library in shared_libraries(binaries):
        info = os.stat(library)
        libraries[library] = [info.st_size, int(info.st_mtime)]
    info = os.stat(python)
    return {
        'interpreter': [str(python), info.st_size, int(info.st_mtime)],
        'guest_sources': {path: hashlib.sha256(data).hexdigest()[:16]
                          for path, data in sorted(sources.items())},
        'stdlib': stdlib, 'libraries': libraries}


def image_files(python_inputs, source_dir=GUEST_SOURCE_DIR, python=PYTHON):
    """{path in the image: (bytes, mode)} of the Python part, from what
    :func:`inputs` returned."""
    source_dir = pathlib.Path(source_dir)
    files = {str(python).lstrip('/'): (pathlib.Path(python).read_bytes(),
                                       0o755)}
    for library in python_inputs['libraries']:
        files[library.lstrip('/')] = (pathlib.Path(library).read_bytes(),
                                      0o755)
    stdlib = python_inputs['stdlib']
    sources = [f for f in stdlib if f.endswith('.py')]
    for path, data in zip(sources, compile_files(
            [(f, f) for f in sources], python), strict=True):
        files[path.lstrip('/') + 'c'] = (data, 0o644)  # sourceless
    for path in stdlib:
        if not path.endswith('.py'):
            files[path.lstrip('/')] = (pathlib.Path(path).read_bytes(),
                                       0o755)
    guest = sorted(python_inputs['guest_sources'])
    tag = cache_tag(python)
    compiled = compile_files(
        [(source_dir / path, '/%s/%s' % (GUEST_CODE_DIR, path))
         for path in guest], python)
    for path, data in zip(guest, compiled, strict=True):
        relative = pathlib.PurePosixPath(GUEST_CODE_DIR, path)
        files[str(relative)] = ((source_dir / path).read_bytes(), 0o644)
        compiled_path = relative.parent / '__pycache__' / (
            '%s.%s.pyc' % (relative.stem, tag))
        files[str(compiled_path)] = (data, 0o644)
    return files
