"""The monitors' schedule, with plain numbers for time (no threads, no
clock)."""

from vmha.manager import schedule


def test_entries_come_back_in_time_order_and_only_when_due():
    plan = schedule.Schedule(origin=0.0)
    plan.plan(5.0, 'b')
    plan.plan(2.0, 'a')
    plan.plan(9.0, 'c', job='ping-of-c')
    assert plan.next_due() == 2.0
    assert list(plan.pop_due(1.9)) == []
    assert [e.uuid for e in plan.pop_due(5.0)] == ['a', 'b']
    assert plan.next_due() == 9.0
    [overdue] = plan.pop_due(100.0)
    assert (overdue.when, overdue.uuid, overdue.job) == (9.0, 'c',
                                                         'ping-of-c')
    assert plan.next_due() is None and len(plan) == 0


def test_entries_due_at_the_same_time_keep_the_order_they_were_planned():
    plan = schedule.Schedule(origin=0.0)
    for uuid in ('x', 'y', 'z'):
        plan.plan(3.0, uuid)
    assert [e.uuid for e in plan.pop_due(3.0)] == ['x', 'y', 'z']


def test_an_entry_put_back_is_due_again_before_those_planned_after_it():
    plan = schedule.Schedule(origin=0.0)
    plan.plan(1.0, 'a')
    [entry] = plan.pop_due(1.0)
    plan.plan(1.0, 'b')
    plan.put_back(entry)  # the pool was full: try on the next step
    assert [e.uuid for e in plan.pop_due(1.5)] == ['a', 'b']


def test_ticks_line_probes_of_one_interval_up_from_the_origin():
    plan = schedule.Schedule(origin=100.0)
    assert plan.next_tick(100.0, 5.0) == 105.0
    assert plan.next_tick(103.2, 5.0) == 105.0
    assert plan.next_tick(105.0, 5.0) == 110.0  # strictly after now
    assert plan.next_tick(107.9, 2.0) == 108.0
