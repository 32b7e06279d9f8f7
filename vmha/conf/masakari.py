"""Options of the [masakari] group: how vmha reaches Masakari's API.

Authentication, TLS and endpoint selection are keystoneauth's own options,
registered by its loading helpers exactly as other OpenStack services do
(``auth_type``, ``auth_url``, ``username``..., ``cafile``, ``timeout``,
``service_type``, ``valid_interfaces``, ``endpoint_override``...).  The
auth plugin's options are registered when the plugin is loaded; the sample
file documents the ``password`` plugin's.
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from vmha.conf import base

masakari_group = cfg.OptGroup('masakari', title='Masakari API', help="""
Masakari's API, for the ``masakari`` notification sink (direct mode) and
for vmha-masakari-bridge.
""")

SERVICE_TYPE = 'instance-ha'
DEFAULT_TIMEOUT = 10.0
DEFAULT_AUTH_PLUGIN = 'password'

masakari_opts = [
    cfg.BoolOpt('noauth',
                default=False,
                help="""
Talk to Masakari without Keystone.

For a masakari-api run with ``auth_strategy = noauth2`` (tests, small
deployments).  No token is fetched; requests go to ``endpoint_override``
as the admin user (``X-User-Id: admin``).

Related options:

* ``endpoint_override``: required with this option, e.g.
  ``http://controller:15868/v1``
"""),
    cfg.IntOpt('retry_max',
               default=3,
               min=0,
               max=20,
               help="""
Retries of one notification when Masakari cannot be reached, times out or
answers 5xx.

Waits ``retry_interval`` seconds before the first retry and twice as long
before each next one (at most 60 s a wait).  After the last retry the
notification is given back to be sent again later (the agent's outbox, or
the bus for the bridge): it is never dropped.  Answers 400 and 409 are
final and never retried.

Related options:

* ``retry_interval``
"""),
    cfg.FloatOpt('retry_interval',
                 default=2.0,
                 min=0,
                 help="""
Seconds before the first retry of a notification Masakari did not take.

Related options:

* ``retry_max``
"""),
]


def _session_opts():
    opts = ks_loading.get_session_conf_options()
    cfg.set_defaults(opts, timeout=DEFAULT_TIMEOUT)
    return opts


def _adapter_opts():
    opts = ks_loading.get_adapter_conf_options(include_deprecated=False)
    cfg.set_defaults(opts, service_type=SERVICE_TYPE,
                     valid_interfaces=['internal', 'public'])
    return opts


def register_opts(conf):
    base.register_group(conf, masakari_group, masakari_opts)
    ks_loading.register_session_conf_options(conf, masakari_group.name)
    ks_loading.register_auth_conf_options(conf, masakari_group.name)
    ks_loading.register_adapter_conf_options(conf, masakari_group.name,
                                             include_deprecated=False)
    conf.set_default('timeout', DEFAULT_TIMEOUT, group=masakari_group.name)
    conf.set_default('service_type', SERVICE_TYPE, group=masakari_group.name)
    conf.set_default('valid_interfaces', ['internal', 'public'],
                     group=masakari_group.name)


def list_opts():
    return {masakari_group: (
        masakari_opts
        + _session_opts()
        + ks_loading.get_auth_common_conf_options()
        + ks_loading.get_auth_plugin_conf_options(DEFAULT_AUTH_PLUGIN)
        + _adapter_opts())}
