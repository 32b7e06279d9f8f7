"""The lifecycle-action table and flow (``lifecycle_actions``), pure.

What a user notices: whether the guest was asked, whether the action
happened, and what the caller is told.  The guest is a double of the
heartbeat monitor's ``ask`` (vmha's own component, not the thing under
test) answering as a voting guest would; the action is a recording.
"""

import pytest

from vmha.manager import action_runner
from vmha.manager import lifecycle_actions as la

Answer = action_runner.Answer

REGISTRATION = {'vote_secs': 5, 'shutdown_notice_secs': 7,
                'suspend_notice_secs': 9, 'resume_notice_secs': 11,
                'restart_secs': 60}


class Guest:
    """A registered heartbeat guest: ``answers[(event, notification,
    phase)]`` is what it says (default: accept)."""

    def __init__(self, answers=None, registered=True):
        self.answers = answers or {}
        self.asked = []
        self.registered = registered

    def ask(self, event, notification, phase, timeout):
        self.asked.append((event, notification, phase, timeout))
        if not self.registered:
            return action_runner.NoHeartbeat().ask('u', event, notification,
                                                   phase, timeout)
        return self.answers.get((event, notification, phase),
                                Answer('accept', None))


class World:
    """The effects a flow has, recorded."""

    def __init__(self, guest=None, fail=None, registers_again=True):
        self.guest = guest or Guest()
        self.acted = []
        self.holds = []
        self.waited = []
        self.phases = []
        self.slept = []
        self.now = 0.0
        self._fail = fail
        self._registers_again = registers_again

    def act(self, operation):
        self.acted.append(operation)
        if self._fail:
            raise la.ActionFailed(self._fail)
        self.now += 0.25
        return '%s done' % operation

    def wait_registered(self, seconds):
        self.waited.append(seconds)
        return self._registers_again

    def effects(self):
        return la.Effects(self.guest.ask,
                          lambda why, seconds: self.holds.append(
                              (why, seconds)),
                          self.act, self.wait_registered, lambda: self.now,
                          self.sleep, self.phases.append)

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def run(self, action, registration=REGISTRATION, **kwargs):
        return la.run_flow(la.row(action), registration, self.effects(),
                           **kwargs)


def results(outcome):
    return [(p.phase, p.result) for p in outcome.phases]


# The seed's table (DESIGN.md): action -> (event, vote, pre, post,
# timeout).
SEED = {
    'stop': ('stop', True, True, False, 'shutdown_notice_secs'),
    'reboot': ('reboot', True, True, False, 'shutdown_notice_secs'),
    'pause': ('pause', True, True, False, 'suspend_notice_secs'),
    'unpause': ('unpause', False, False, True, 'resume_notice_secs'),
    'suspend': ('suspend', True, True, False, 'suspend_notice_secs'),
    'resume': ('resume', False, False, True, 'resume_notice_secs'),
    'resize-begin': ('resize_begin', True, True, False,
                     'suspend_notice_secs'),
    'resize-end': ('resize_end', False, False, True, 'resume_notice_secs'),
    'live-migrate-begin': ('live_migrate_begin', True, True, False,
                           'suspend_notice_secs'),
    'live-migrate-end': ('live_migrate_end', False, False, True,
                         'resume_notice_secs'),
    'cold-migrate-begin': ('cold_migrate_begin', True, True, False,
                           'suspend_notice_secs'),
    'cold-migrate-end': ('cold_migrate_end', False, False, True,
                         'resume_notice_secs'),
}


def test_the_table_is_the_seeds():
    assert {name: (r.event, r.vote, r.pre, r.post, r.timeout)
            for name, r in la.TABLE.items()} == SEED


def test_event_names_and_unknown_actions():
    assert la.row('resize_begin') is la.row('resize-begin')
    with pytest.raises(la.UnknownAction, match="'explode'.*stop, reboot"):
        la.row('explode')
    with pytest.raises(la.UnknownAction):
        la.row(None)


# No false failures first: whatever the guest does, an accepted action
# happens, and a guest that cannot answer never blocks its own action.

def test_no_registered_guest_accepts_and_the_action_happens():
    world = World(Guest(registered=False))

    outcome = world.run('stop', registration=None)

    assert outcome.verdict == 'accepted' and outcome.done
    assert world.acted == ['stop']
    assert outcome.phases[0].reason == 'no heartbeat guest'


def test_a_vote_nobody_answers_in_time_accepts():
    world = World(Guest({('stop', 'revocable', 'pre'):
                         Answer('timeout', None)}))

    outcome = world.run('stop')

    assert outcome.verdict == 'accepted' and outcome.done
    assert world.acted == ['stop']
    assert outcome.phases[0] == la.Phase('vote', 'stop', 'accepted',
                                         'no vote within 5s: accepted', 0)


def test_a_notice_whose_handlers_run_late_lets_the_action_go_on():
    world = World(Guest({('pause', 'irrevocable', 'pre'):
                         Answer('timeout', None)}))

    outcome = world.run('pause')

    assert world.acted == ['pause'] and outcome.done
    assert outcome.phases[1].reason == \
        'handlers did not finish within 9s: going on'


def test_a_reject_of_an_irrevocable_notice_changes_nothing():
    world = World(Guest({('stop', 'irrevocable', 'pre'):
                         Answer('reject', 'too late to say no')}))

    outcome = world.run('stop')

    assert outcome.verdict == 'accepted' and world.acted == ['stop']


# The vote.

def test_a_rejected_stop_never_acts_and_returns_the_guests_reason():
    world = World(Guest({('stop', 'revocable', 'pre'):
                         Answer('reject', 'database resync in progress')}))

    outcome = world.run('stop')

    assert outcome.verdict == 'rejected'
    assert outcome.reason == 'database resync in progress'
    assert not outcome.done
    assert world.acted == [] and world.holds == []
    assert results(outcome) == [('vote', 'rejected')]
    # Only the vote was asked: no notice of an action that does not come.
    assert [a[:3] for a in world.guest.asked] == [
        ('stop', 'revocable', 'pre')]


def test_a_rejection_without_a_reason_still_says_so():
    world = World(Guest({('reboot', 'revocable', 'pre'):
                         Answer('reject', None)}))

    outcome = world.run('reboot')

    assert (outcome.verdict, outcome.reason) == ('rejected',
                                                 'no reason given')


def test_the_guests_granted_timeouts_govern_the_vote_and_notices():
    world = World()

    world.run('stop')
    world.run('unpause')

    assert world.guest.asked == [
        ('stop', 'revocable', 'pre', 5.0),
        ('stop', 'irrevocable', 'pre', 7.0),
        ('unpause', 'irrevocable', 'post', 11.0)]


def test_unregistered_guests_get_the_protocols_default_timeouts():
    world = World(Guest(registered=False))

    world.run('suspend', registration=None)

    assert [a[3] for a in world.guest.asked] == [8.0, 8.0]


def test_hostile_registration_values_fall_back_to_the_defaults():
    granted = la.timeouts({'vote_secs': -1, 'shutdown_notice_secs': 'x',
                           'restart_secs': True, 'resume_notice_secs': 2})
    assert granted == dict(la.DEFAULT_TIMEOUTS, resume_notice_secs=2.0)


# The flow of each row.

@pytest.mark.parametrize('action, asked, acted, phases, done', [
    ('stop', [('revocable', 'pre'), ('irrevocable', 'pre')], ['stop'],
     [('vote', 'accepted'), ('pre', 'done'), ('action', 'done'),
      ('post', 'skipped')], True),
    ('reboot', [('revocable', 'pre'), ('irrevocable', 'pre')], ['reboot'],
     [('vote', 'accepted'), ('pre', 'done'), ('action', 'done'),
      ('post', 'skipped')], True),
    ('pause', [('revocable', 'pre'), ('irrevocable', 'pre')], ['pause'],
     [('vote', 'accepted'), ('pre', 'done'), ('action', 'done'),
      ('post', 'skipped')], True),
    ('suspend', [('revocable', 'pre'), ('irrevocable', 'pre')],
     ['suspend'], [('vote', 'accepted'), ('pre', 'done'),
                   ('action', 'done'), ('post', 'skipped')], True),
    ('unpause', [('irrevocable', 'post')], ['unpause'],
     [('vote', 'skipped'), ('pre', 'skipped'), ('action', 'done'),
      ('post', 'done')], True),
    ('resume', [('irrevocable', 'post')], ['resume'],
     [('vote', 'skipped'), ('pre', 'skipped'), ('action', 'done'),
      ('post', 'done')], True),
    # nova resizes and migrates: vmha votes and notifies, the caller acts.
    ('resize-begin', [('revocable', 'pre'), ('irrevocable', 'pre')], [],
     [('vote', 'accepted'), ('pre', 'done'), ('action', 'skipped')],
     False),
    ('resize-end', [('irrevocable', 'post')], [],
     [('vote', 'skipped'), ('pre', 'skipped'), ('action', 'skipped'),
      ('post', 'done')], True),
    ('live-migrate-begin', [('revocable', 'pre'), ('irrevocable', 'pre')],
     [], [('vote', 'accepted'), ('pre', 'done'), ('action', 'skipped')],
     False),
    ('live-migrate-end', [('irrevocable', 'post')], [],
     [('vote', 'skipped'), ('pre', 'skipped'), ('action', 'skipped'),
      ('post', 'done')], True),
    ('cold-migrate-begin', [('revocable', 'pre'), ('irrevocable', 'pre')],
     [], [('vote', 'accepted'), ('pre', 'done'), ('action', 'skipped')],
     False),
    ('cold-migrate-end', [('irrevocable', 'post')], [],
     [('vote', 'skipped'), ('pre', 'skipped'), ('action', 'skipped'),
      ('post', 'done')], True),
])
def test_the_flow_of_each_action(action, asked, acted, phases, done):
    world = World()

    outcome = world.run(action)

    event = la.row(action).event
    assert world.guest.asked == [
        (event, notification, phase,
         float(REGISTRATION['vote_secs'] if notification == 'revocable'
               else REGISTRATION[la.row(action).timeout]))
        for notification, phase in asked]
    assert world.acted == acted
    assert results(outcome) == phases
    assert outcome.verdict == 'accepted' and outcome.done is done
    assert world.phases == outcome.phases  # each phase reported as it ends
    assert all(p.event == event for p in outcome.phases)


@pytest.mark.parametrize('action, restarts', [
    ('stop', False), ('reboot', True), ('suspend', False),
    # nova stops the guest next, and starts it on the destination.
    ('resize-begin', True), ('cold-migrate-begin', True)])
def test_actions_that_stop_the_heartbeat_hold_it_before_acting(action,
                                                               restarts):
    world = World()

    world.run(action, call_seconds=30)

    [(why, seconds)] = world.holds
    assert action in why
    notice = REGISTRATION[la.row(action).timeout]
    restart = REGISTRATION['restart_secs'] if restarts else 0
    assert seconds == 30 + notice + restart


# pause: the monitor pauses the session on libvirt's event, and resumes it
# on the unpause's; a hold would outlast the unpause.
@pytest.mark.parametrize('action', ['pause', 'unpause', 'resume',
                                    'resize-end',
                                    'live-migrate-begin', 'live-migrate-end',
                                    'cold-migrate-end'])
def test_actions_that_start_the_guest_hold_nothing(action):
    world = World()
    world.run(action)
    assert world.holds == []


def test_vote_only_asks_and_notifies_holds_and_leaves_the_action_to_the_caller(
        ):
    world = World()

    outcome = world.run('stop', vote_only=True, call_seconds=10)

    assert outcome.verdict == 'accepted' and not outcome.done
    assert world.acted == []
    assert results(outcome) == [('vote', 'accepted'), ('pre', 'done'),
                                ('action', 'skipped')]
    assert 'caller' in outcome.reason
    # The caller stops the guest next: its heartbeat must not count that
    # as a loss.
    assert len(world.holds) == 1


def test_vote_only_rejected_is_rejected():
    world = World(Guest({('pause', 'revocable', 'pre'):
                         Answer('reject', 'busy')}))

    outcome = world.run('pause', vote_only=True)

    assert (outcome.verdict, outcome.reason) == ('rejected', 'busy')


def test_a_failed_action_is_reported_and_not_done():
    world = World(fail='libvirt did not answer within 30s')

    outcome = world.run('reboot')

    assert outcome.verdict == 'accepted' and not outcome.done
    assert outcome.reason == 'libvirt did not answer within 30s'
    assert results(outcome)[-1] == ('action', 'failed')


def test_a_failed_resume_sends_no_post_notification():
    world = World(fail='no saved memory')

    world.run('resume')

    assert world.guest.asked == []


def test_cold_migrate_end_waits_for_the_guest_to_register_again():
    world = World()

    outcome = world.run('cold-migrate-end')

    assert world.waited == [60.0]
    assert results(outcome)[-1] == ('post', 'done')


def test_cold_migrate_end_without_registration_skips_the_post_notice():
    world = World(registers_again=False)

    outcome = world.run('cold-migrate-end')

    assert world.guest.asked == []
    assert results(outcome)[-1] == ('post', 'skipped')
    assert 'did not register again within 60s' in outcome.reason
    assert outcome.done  # the migration itself is the caller's, and done


def test_phases_say_how_long_they_took():
    world = World()

    outcome = world.run('stop')

    assert outcome.phases[2].took_ms == 250  # act() moves the clock


def test_a_hostile_reason_is_one_short_printable_line():
    world = World(Guest({('stop', 'revocable', 'pre'):
                         Answer('reject', 'no\nway\x1b[2J' + 'x' * 5000)}))

    outcome = world.run('stop')

    assert outcome.verdict == 'rejected'
    assert outcome.reason.startswith('no way [2J')
    assert len(outcome.reason) <= la.MAX_REASON
    assert outcome.reason.isprintable()


@pytest.mark.parametrize('reason', [None, '', '   ', 42, ['x']])
def test_a_rejection_without_usable_reason_says_so(reason):
    world = World(Guest({('stop', 'revocable', 'pre'):
                         Answer('reject', reason)}))
    assert world.run('stop').reason == 'no reason given'


def test_a_post_notice_waits_for_a_guest_that_cannot_be_asked_yet():
    # Right after an unpause the heartbeat still sees the VM paused and
    # answers at once that the guest cannot answer; a moment later the
    # guest is back and answers.
    class Waking(Guest):
        def ask(self, event, notification, phase, timeout):
            super().ask(event, notification, phase, timeout)
            if len(self.asked) < 3:
                return Answer('timeout', 'guest cannot answer (paused)')
            return Answer('accept', 'caches warmed')

    world = World(Waking())

    outcome = world.run('unpause')

    assert outcome.phases[-1].reason == 'caches warmed'
    assert len(world.guest.asked) == 3
    assert world.slept == [la.RETRY_INTERVAL] * 2
    # Each try gets what is left of the notice timeout.
    assert world.guest.asked[1][3] == 10.8  # whole tenths


def test_a_post_notice_gives_up_once_its_timeout_ran_out():
    class Away(Guest):
        def ask(self, event, notification, phase, timeout):
            super().ask(event, notification, phase, timeout)
            return Answer('timeout', 'guest cannot answer (paused)')

    world = World(Away())

    outcome = world.run('resume')

    assert outcome.done
    assert outcome.phases[-1].reason == 'handlers did not finish within 11s'
    assert sum(world.slept) <= 11  # within the notice timeout
    assert len(world.guest.asked) > 1


def test_a_guest_that_really_ran_out_of_time_is_not_asked_twice():
    class Slow(Guest):
        def __init__(self, world):
            super().__init__()
            self.world = world

        def ask(self, event, notification, phase, timeout):
            super().ask(event, notification, phase, timeout)
            self.world.now += timeout  # waited the whole time
            return Answer('timeout', None)

    world = World()
    world.guest = Slow(world)

    world.run('unpause')

    assert len(world.guest.asked) == 1
