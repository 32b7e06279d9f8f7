"""A small client for Masakari's ``POST /v1/notifications`` (and the
``GET /v1/notifications/{id}`` that follows a recovery).

Built on a keystoneauth1 ``Adapter`` rather than openstacksdk's
``instance_ha`` proxy: vmha needs the HTTP status and Masakari's own reason
text to tell "accepted" from "rejected for good" from "try again", and the
SDK turns those answers into exceptions of its own (and brings a large
dependency for one call).  keystoneauth still does everything operators
expect: ``auth_type`` and its plugin options, the service catalog
(``service_type = instance-ha``, ``valid_interfaces``, ``region_name``),
``endpoint_override``, TLS options and ``timeout``, token refresh on 401.

Outcomes of ``send_notification``:

* 2xx: ``Result.ACCEPTED``: Masakari recorded the notification.
* 400 (host not in any failover segment, or a body it refuses) and 409
  (duplicate within its 180 s window, host under maintenance):
  ``Result.REJECTED`` with Masakari's reason.  Sending again would get the
  same answer, so the caller treats the notification as done.
* anything else (connection refused, timeout, TLS or auth failure, 5xx,
  any other status): retried here ``retry_max`` times with doubling waits,
  then ``MasakariUnavailable`` is raised: the caller must keep the
  notification and send it again later.

``noauth`` mode talks to a masakari-api run with ``auth_strategy =
noauth2``.  Its ``NoAuthMiddleware`` needs no token: it builds an admin
context (``is_admin=True``, which satisfies every ``rule:admin_api``
policy) for the user named by ``X-User-Id`` (or ``X-User``), 'admin' if
absent, and ignores ``X-Auth-Token`` and the project.  vmha sends
``X-User-Id: admin`` so that Masakari's records name a user on purpose.
Both ``<endpoint>/notifications`` and ``<endpoint>/<project>/notifications``
route, so ``endpoint_override = http://host:15868/v1`` is enough.
"""

import logging
import time

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading

from vmha import backoff

LOG = logging.getLogger(__name__)

NOAUTH_HEADERS = {'X-User-Id': 'admin'}
#: Longest wait between two attempts, whatever retry_interval says.
MAX_RETRY_WAIT = 60.0
# Masakari's error bodies are short; anything longer is not a reason.
_MAX_REASON_LENGTH = 500


class MasakariConfigError(ValueError):
    """The [masakari] options cannot make a working client."""


class MasakariUnavailable(Exception):
    """Masakari did not take the notification after every retry.

    :ivar reason: what went wrong the last time
    :ivar status: the last HTTP status, or None when there was no answer
    :ivar attempts: how many requests were made
    """

    def __init__(self, reason, status=None, attempts=1):
        super().__init__('Masakari did not take the notification after %d '
                         'attempt(s): %s' % (attempts, reason))
        self.reason = reason
        self.status = status
        self.attempts = attempts


class NotificationGone(Exception):
    """Masakari has no notification with that id (404): purged, or
    another Masakari."""


#: The microversion whose ``GET /notifications/{id}`` adds
#: ``recovery_workflow_details``.  masakari-api asks the engine for them
#: over RPC, so without a running engine that GET fails (500, after the
#: API's RPC timeout) while the plain one still answers from the database.
WORKFLOW_MICROVERSION = '1.1'


class Result:
    """What Masakari answered to one notification.

    :ivar outcome: ``Result.ACCEPTED`` or ``Result.REJECTED``
    :ivar status: the HTTP status
    :ivar reason: Masakari's explanation of a rejection (None if accepted)
    :ivar notification_uuid: Masakari's id of an accepted notification
    :ivar attempts: how many requests it took
    """

    ACCEPTED = 'accepted'
    REJECTED = 'rejected'

    def __init__(self, outcome, status, reason=None, notification_uuid=None,
                 attempts=1):
        self.outcome = outcome
        self.status = status
        self.reason = reason
        self.notification_uuid = notification_uuid
        self.attempts = attempts

    @property
    def accepted(self):
        return self.outcome == self.ACCEPTED

    def __repr__(self):
        return ('Result(%s, status=%s, reason=%r, notification_uuid=%r)'
                % (self.outcome, self.status, self.reason,
                   self.notification_uuid))


class _Retryable(Exception):
    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MasakariClient:
    """Sends notifications to Masakari; safe to share between threads.

    :param adapter: a keystoneauth1 ``Adapter`` for the instance-ha service
    :param retry_max: retries after the first attempt
    :param retry_interval: seconds before the first retry; doubles each
        time, at most ``MAX_RETRY_WAIT``
    :param headers: extra request headers (noauth mode)
    :param sleep: how to wait between attempts (``time.sleep``; green
        under a monkey-patched eventlet)
    :param on_request: ``callable(status, seconds, attempt)`` after every
        request (status None when there was no answer), for metrics; it
        must not raise
    :param clock: what ``on_request``'s seconds are measured with
    :param on_get: ``callable(status, seconds)`` after every
        ``get_notification`` (the follow-up polls), for metrics
    """

    def __init__(self, adapter, retry_max=3, retry_interval=2.0,
                 headers=None, sleep=time.sleep, on_request=None,
                 clock=time.monotonic, on_get=None):
        self._adapter = adapter
        self._retry_max = retry_max
        self._retry_interval = retry_interval
        self._headers = dict(headers or {})
        self._sleep = sleep
        self._on_request = on_request
        self._on_get = on_get
        self._clock = clock

    @classmethod
    def from_conf(cls, conf, group='masakari', sleep=time.sleep,
                  on_request=None, on_get=None):
        """A client configured by ``conf``'s ``[group]`` options.

        :raises MasakariConfigError: the options cannot work (no auth and
            not noauth, noauth without endpoint_override, unknown
            auth_type, a required auth option missing)
        """
        options = conf[group]
        try:
            if options.noauth:
                if not options.endpoint_override:
                    raise MasakariConfigError(
                        '[%s] noauth = true needs endpoint_override (e.g. '
                        'http://controller:15868/v1)' % group)
                auth = None
                headers = NOAUTH_HEADERS
            else:
                auth = ks_loading.load_auth_from_conf_options(conf, group)
                if auth is None:
                    raise MasakariConfigError(
                        '[%s] auth_type is not set: set it and its options '
                        '(auth_url, username, password, ...), or noauth = '
                        'true with endpoint_override for a noauth2 '
                        'masakari-api' % group)
                headers = None
            session = ks_loading.load_session_from_conf_options(
                conf, group, auth=auth)
            adapter = ks_loading.load_adapter_from_conf_options(
                conf, group, session=session, auth=auth)
        except ks_exceptions.ClientException as error:
            raise MasakariConfigError('[%s] %s' % (group, error)) from error
        except TypeError as error:
            # keystoneauth's way of saying two adapter options conflict
            raise MasakariConfigError('[%s] %s' % (group, error)) from error
        return cls(adapter, retry_max=options.retry_max,
                   retry_interval=options.retry_interval, headers=headers,
                   sleep=sleep, on_request=on_request, on_get=on_get)

    def send_notification(self, body):
        """POST one notification body, retrying what may succeed later.

        :param body: ``{'notification': {...}}`` as ``translate.to_masakari``
            builds it
        :returns: a ``Result`` (accepted or rejected for good)
        :raises MasakariUnavailable: still failing after every retry
        """
        instance = _instance_of(body)
        attempt = 1
        while True:
            try:
                result = self._timed_post(body, attempt)
            except _Retryable as failure:
                if attempt > self._retry_max:
                    raise MasakariUnavailable(failure.reason, failure.status,
                                              attempt) from None
                wait = backoff.ceiling(attempt - 1, self._retry_interval,
                                       MAX_RETRY_WAIT)
                LOG.warning('Masakari did not take the notification for '
                            'instance %s: %s; retry %d of %d in %.1f s',
                            instance, failure.reason, attempt,
                            self._retry_max, wait)
                self._sleep(wait)
                attempt += 1
                continue
            result.attempts = attempt
            return result

    def get_notification(self, notification_uuid, microversion=None):
        """``GET /notifications/{id}``: Masakari's notification dict.

        One attempt, no retries: the caller polls again later, with its
        own backoff.  ``microversion`` '1.1' (``WORKFLOW_MICROVERSION``)
        adds ``recovery_workflow_details``.

        :raises NotificationGone: 404
        :raises MasakariUnavailable: no answer, another status, or a body
            without a notification
        """
        headers = dict(self._headers)
        if microversion:
            headers['OpenStack-API-Version'] = 'instance-ha %s' % microversion
        started = self._clock()
        status = None
        try:
            try:
                response = self._adapter.get(
                    '/notifications/%s' % notification_uuid,
                    headers=headers, raise_exc=False)
            except ks_exceptions.ClientException as error:
                raise MasakariUnavailable('%s: %s' % (type(error).__name__,
                                                      error)) from None
            status = response.status_code
            if status == 404:
                raise NotificationGone(_reason(response))
            if not 200 <= status < 300:
                raise MasakariUnavailable('HTTP %d: %s'
                                          % (status, _reason(response)),
                                          status)
            document = _json(response)
            notification = (document.get('notification')
                            if isinstance(document, dict) else None)
            if not isinstance(notification, dict):
                raise MasakariUnavailable(
                    'HTTP %d without a notification in the body' % status,
                    status)
            return notification
        finally:
            if self._on_get is not None:
                self._on_get(status, self._clock() - started)

    def _timed_post(self, body, attempt):
        if self._on_request is None:
            return self._post(body)
        started = self._clock()
        try:
            result = self._post(body)
        except _Retryable as failure:
            self._on_request(failure.status, self._clock() - started, attempt)
            raise
        self._on_request(result.status, self._clock() - started, attempt)
        return result

    def _post(self, body):
        try:
            response = self._adapter.post(
                '/notifications', json=body, headers=self._headers,
                raise_exc=False)
        except ks_exceptions.ClientException as error:
            raise _Retryable('%s: %s' % (type(error).__name__, error))
        status = response.status_code
        if 200 <= status < 300:
            return Result(Result.ACCEPTED, status,
                          notification_uuid=_notification_uuid(response))
        if status in (400, 409):
            return Result(Result.REJECTED, status, reason=_reason(response))
        raise _Retryable('HTTP %d: %s' % (status, _reason(response)), status)


def _instance_of(body):
    try:
        return body['notification']['payload']['instance_uuid']
    except (KeyError, TypeError):
        return '<unknown>'


def _json(response):
    try:
        return response.json()
    except ValueError:
        return None


def _notification_uuid(response):
    document = _json(response)
    if isinstance(document, dict):
        notification = document.get('notification')
        if isinstance(notification, dict):
            return notification.get('notification_uuid')
    return None


def _reason(response):
    """Masakari's explanation: ``{"conflictingRequest": {"code": 409,
    "message": "..."}}``; otherwise the start of the body."""
    document = _json(response)
    if isinstance(document, dict):
        for fault in document.values():
            if isinstance(fault, dict) and fault.get('message'):
                return str(fault['message'])
    text = (response.text or '').strip()
    if len(text) > _MAX_REASON_LENGTH:
        text = text[:_MAX_REASON_LENGTH] + '...'
    return text or response.reason or 'no reason given'
