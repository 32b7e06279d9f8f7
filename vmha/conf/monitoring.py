"""Options of the [monitoring] group: which domains vmha watches."""

from oslo_config import cfg

from vmha.conf import base

monitoring_group = cfg.OptGroup('monitoring', title='Monitored domains')

monitoring_opts = [
    cfg.ListOpt('include_names',
                default=['*'],
                help="""
Shell-style patterns (``fnmatch``) of domain names to monitor.

Possible values:

* ``*`` (default): every domain.
* For example ``instance-*`` for nova's domains only.

Related options:

* ``exclude_names`` wins over this list.
* A domain's metadata element wins over both (see ``use_metadata``).
"""),
    cfg.ListOpt('exclude_names',
                default=[],
                help="""
Shell-style patterns of domain names never to monitor.
"""),
    cfg.BoolOpt('use_metadata',
                default=True,
                help="""
Let each domain opt in or out with a libvirt metadata element.

A domain whose XML holds::

  <metadata>
    <vmha:monitoring xmlns:vmha="http://openstack.org/xmlns/vmha/1.0"
                     enabled="false"/>
  </metadata>

is not monitored (``enabled="true"`` monitors it whatever the name
patterns say).  Set it with ``virsh metadata DOMAIN
http://openstack.org/xmlns/vmha/1.0 --key vmha --set '<monitoring
enabled="false"/>'`` or in the domain definition.  A domain's choice is
read when vmha first sees the domain and again when it is redefined.
"""),
]


def register_opts(conf):
    base.register_group(conf, monitoring_group, monitoring_opts)


def list_opts():
    return {monitoring_group: monitoring_opts}
