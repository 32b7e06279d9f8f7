"""Registering one option group on a ``ConfigOpts``."""

import copy


def register_group(conf, group, opts):
    """Register ``group`` and its ``opts`` on ``conf``.

    A copy per ``ConfigOpts``: ``register_group`` copies the group
    shallowly, so a shared ``OptGroup`` would share option overrides
    between two configurations (tests and the demo build several).
    """
    conf.register_group(copy.deepcopy(group))
    conf.register_opts(opts, group=group)
