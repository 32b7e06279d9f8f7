"""Lifecycle actions through the real RPC API and vmha-action, on
test:///default (the agent ``vmha.agent.build`` wires, over fake://).

The agent and its harness are ``test_rpc_api``'s (threading backend, see
there).  Where a guest must vote, the agent's heartbeat is replaced by a
double of the heartbeat monitor's ask/hold/registration: the guest side
of the channel is not what these tests are about.
"""

import io
import json

from prometheus_client import parser
import pytest

from tests.functional import test_rpc_api as harness
from vmha import rpcapi
from vmha.cmd import action as action_cmd
from vmha.manager import action_runner
from vmha.manager import inventory

pytestmark = pytest.mark.functional
Agent, HOST = harness.Agent, harness.HOST
# test_rpc_api's fixtures, used here as they are there.
libvirt_conn = harness.libvirt_conn
agents = harness.agents
boot = harness.boot
RUNNING, PAUSED, SHUTOFF = 1, 3, 5


class VotingGuest:
    """Every VM has a registered guest; ``rejects[uuid]`` is the reason
    the guest of that domain rejects every vote with."""

    def __init__(self):
        self.rejects = {}
        self.asked = []
        self.holds = []

    def ask(self, uuid, event, notification, phase, timeout,
            action_id=None):
        self.asked.append((event, notification, phase))
        reason = self.rejects.get(uuid)
        if reason and notification == 'revocable':
            return action_runner.Answer('reject', reason)
        return action_runner.Answer('accept', 'ready')

    def hold(self, uuid, why, seconds):
        self.holds.append((uuid, why))

    def registration(self, uuid):
        return {'vote_secs': 2, 'shutdown_notice_secs': 2,
                'suspend_notice_secs': 2, 'resume_notice_secs': 2,
                'restart_secs': 5}


def with_guest(agent):
    guest = VotingGuest()
    agent.service.actions.heartbeat = guest
    return guest


def metric_samples(agent):
    body = agent.service.metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in parser.text_string_to_metric_families(body)
            for s in f.samples}


def action_notifications(agent, name):
    return [m.payload['vmha_object.data'] for m in agent.sink.messages
            if m.event_type == 'instance.action'
            and m.payload['vmha_object.data']['name'] == name]


def test_stop_over_rpc_without_heartbeat_guest_is_done(agents, boot,
                                                       wait_for):
    agent = agents()
    domain = boot()

    answer = agent.call('request_action', domain.name, 'stop')

    assert answer['verdict'] == 'accepted' and answer['done'] is True
    assert answer['instance'] == domain.uuid
    assert domain.state()[0] == SHUTOFF
    assert [(p['phase'], p['result']) for p in answer['phases']] == [
        ('vote', 'accepted'), ('pre', 'done'), ('action', 'done'),
        ('post', 'skipped')]
    assert answer['phases'][0]['reason'] == 'no heartbeat guest'
    assert metric_samples(agent)[('vmha_actions_total', (
        ('action', 'stop'), ('outcome', 'done')))] == 1
    wait_for(lambda: len(action_notifications(agent, domain.name)) == 4,
             what='4 instance.action notifications')
    assert {n['action_id'] for n in action_notifications(
        agent, domain.name)} == {answer['action_id']}


def test_a_stop_the_guest_rejects_is_not_done_and_the_caller_hears_why(
        agents, boot):
    agent = agents()
    domain = boot()
    guest = with_guest(agent)
    guest.rejects[domain.uuid] = 'database resync in progress'

    answer = agent.call('request_action', domain.uuid, 'stop')

    assert answer['verdict'] == 'rejected' and answer['done'] is False
    assert answer['reason'] == 'database resync in progress'
    assert domain.state()[0] == RUNNING
    assert guest.asked == [('stop', 'revocable', 'pre')]
    samples = metric_samples(agent)
    assert samples[('vmha_actions_total', (('action', 'stop'),
                                           ('outcome', 'rejected')))] == 1
    assert samples[('vmha_actions_running', ())] == 0


def test_suspend_and_resume_over_rpc(agents, boot):
    agent = agents()
    domain = boot()
    guest = with_guest(agent)

    assert agent.call('request_action', domain.name, 'suspend')['done']
    assert domain.state()[0] == SHUTOFF
    assert agent.call('request_action', domain.name, 'resume')['done']
    assert domain.state()[0] == RUNNING
    assert guest.asked == [('suspend', 'revocable', 'pre'),
                           ('suspend', 'irrevocable', 'pre'),
                           ('resume', 'irrevocable', 'post')]
    assert len(guest.holds) == 1  # the suspend's


def test_reboot_pause_unpause_over_rpc(agents, boot):
    agent = agents()
    domain = boot()

    assert agent.call('request_action', domain.name, 'reboot')['done']
    assert domain.state()[0] == RUNNING
    assert agent.call('request_action', domain.name, 'pause')['done']
    assert domain.state()[0] == PAUSED
    assert agent.call('request_action', domain.name, 'unpause')['done']
    assert domain.state()[0] == RUNNING


def test_vote_only_over_rpc_leaves_the_domain_alone(agents, boot):
    agent = agents()
    domain = boot()

    answer = agent.call('request_action', domain.name, 'stop',
                        vote_only=True)

    assert answer['verdict'] == 'accepted' and answer['done'] is False
    assert domain.state()[0] == RUNNING


def test_bad_requests_raise_their_own_errors_in_the_client(agents, boot):
    agent = agents()
    domain = boot()
    with pytest.raises(action_runner.UnknownAction, match='explode'):
        agent.call('request_action', domain.name, 'explode')
    with pytest.raises(inventory.InstanceNotFound, match='no-such-vm'):
        agent.call('request_action', 'no-such-vm', 'stop')
    assert domain.state()[0] == RUNNING


def test_allow_changes_false_refuses_actions(tmp_path, boot):
    agent = Agent(tmp_path / 'vmha.sqlite',
                  groups={'rpc': {'allow_changes': False}})
    try:
        domain = boot()
        with pytest.raises(rpcapi.ChangesRefused, match='read-only'):
            agent.call('request_action', domain.name, 'stop')
        assert domain.state()[0] == RUNNING
    finally:
        agent.stop()


def test_a_client_capped_at_1_0_keeps_working_and_cannot_ask_for_actions(
        agents, boot):
    agent = agents()
    domain = boot()
    old = rpcapi.AgentAPI(agent.rpc.transport, timeout=10,
                          version_cap='0.1')

    assert old.get_instance({}, HOST, domain.name)['uuid'] == domain.uuid
    with pytest.raises(rpcapi.TooOld, match='1.1'):
        old.request_action({}, HOST, domain.name, 'stop')
    assert domain.state()[0] == RUNNING


# vmha-action against the same agent.

def run_cli(agent, *argv):
    out, err = io.StringIO(), io.StringIO()
    code = action_cmd.main(['--host', agent.host] + list(argv), out=out,
                           err=err, transport=agent.rpc.transport)
    return code, out.getvalue(), err.getvalue()


def test_cli_stop_done_exits_0(agents, boot):
    agent = agents()
    domain = boot()

    code, out, err = run_cli(agent, domain.name, 'stop')

    assert code == 0, err
    assert out.startswith('stop of %s done' % domain.name)
    assert domain.state()[0] == SHUTOFF


def test_cli_rejected_stop_says_why_in_one_line_and_exits_3(agents, boot):
    agent = agents()
    domain = boot()
    with_guest(agent).rejects[domain.uuid] = 'database resync in progress'

    code, out, err = run_cli(agent, domain.name, 'stop')

    assert code == action_cmd.EXIT_REJECTED
    assert out == ('stop of %s rejected by the guest: database resync in '
                   'progress\n' % domain.name)
    assert domain.state()[0] == RUNNING


def test_cli_vote_only_json(agents, boot):
    agent = agents()
    domain = boot()

    code, out, err = run_cli(agent, domain.name, 'pause', '--vote-only',
                             '--json')

    assert code == 0, err
    answer = json.loads(out)
    assert (answer['verdict'], answer['done']) == ('accepted', False)
    assert domain.state()[0] == RUNNING


def test_cli_errors(agents, boot):
    agent = agents()
    domain = boot()

    code, out, err = run_cli(agent, 'no-such-vm', 'stop')
    assert code == action_cmd.EXIT_FAILED and 'no-such-vm' in err

    code, out, err = run_cli(agent, domain.name, 'explode')
    assert code == action_cmd.EXIT_CONFIG
    assert "unknown action 'explode'" in err

    domain.destroy()
    code, out, err = run_cli(agent, domain.name, 'reboot')
    assert code == action_cmd.EXIT_FAILED
    assert 'failed' in out and 'not running' in out


def test_cli_migrate_and_its_tasks(agents, boot):
    """test:///default cannot migrate: the migration starts, then fails
    (an instance.migration error); the tasks need a migration under
    way."""
    agent = agents()
    domain = boot()

    code, out, err = run_cli(agent, domain.name, 'migrate',
                             'test:///default')
    assert code == 0, err
    assert out.startswith('live migration of %s to test:///default '
                          'started' % domain.name)
    code, out, err = run_cli(agent, domain.name, 'migrate')
    assert code == 2 and 'needs a destination' in err
    code, out, err = run_cli(agent, 'no-such-vm', 'migrate-abort')
    assert code == 1 and 'refused' in err
    assert domain.state()[0] == RUNNING
