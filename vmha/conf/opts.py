"""Entry point for oslo-config-generator (``oslo.config.opts``: vmha)."""

import vmha.conf


def list_opts():
    return [(group, list(opts)) for group, opts in vmha.conf.list_opts()]
