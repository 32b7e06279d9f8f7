"""NativePool's lifetime: a closed pool gives its descriptors back once its
threads end, and never writes to a descriptor it no longer owns."""

import os
import resource
import threading
import time

import pytest

from tests.conftest import BACKEND
from vmha import concurrency


def _open_fds():
    return len(os.listdir('/proc/self/fd'))


def test_closed_pools_give_their_descriptors_back(wait_for):
    # An agent restarted in one process (the tests, an embedding) made a
    # pool each time; every one used to keep its wake-up pipe open.
    backend = concurrency.get(BACKEND)
    before = None
    for round_ in range(21):
        if round_ == 1:
            # After one round: eventlet's hub opens its epoll lazily.
            before = _open_fds()
        pool = concurrency.NativePool(backend, 4)
        for index in range(4):
            pool.submit(index, time.sleep, 0.001)
        finished = []
        while len(finished) < 4:
            finished += pool.wait(1.0)
        pool.close()
    wait_for(lambda: _open_fds() <= before, timeout=10,
             what='the closed pools\' descriptors closed')


def test_a_call_running_at_close_finishes_without_touching_its_pipe(
        wait_for):
    backend = concurrency.get(BACKEND)
    pool = concurrency.NativePool(backend, 2)
    release = threading.Event()
    job = pool.submit('slow', release.wait, 5)
    pool.close()
    read_fd = pool._pipe.read_fd
    assert read_fd >= 0      # still open: the call may still wake it
    # A descriptor opened now may take any free number; the pool's late
    # wake-up must not land in it.
    other_read, other_write = os.pipe()
    try:
        release.set()
        wait_for(lambda: job.done, timeout=10, what='the call done')
        wait_for(lambda: pool._pipe.read_fd == -1, timeout=10,
                 what='the pipe closed by the last thread')
        os.set_blocking(other_read, False)
        try:
            stray = os.read(other_read, 16)
        except BlockingIOError:
            stray = b''
        assert stray == b''
        assert pool.wait(0.1) == [job]   # collected, no wait on a closed fd
    finally:
        os.close(other_read)
        os.close(other_write)


def test_closing_an_unused_pool_closes_its_pipe_at_once():
    pool = concurrency.NativePool(concurrency.get(BACKEND), 2)
    pool.close()
    pool.close()
    assert pool._pipe.read_fd == -1
    assert pool.wait(0.05) == []


def test_a_pool_whose_pipe_is_numbered_past_1024_still_waits():
    # A host with hundreds of guests (channels, agent sockets) opens more
    # than 1,024 descriptors; select() cannot wait on those.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip('the descriptor limit is below 1,200')
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        pool = concurrency.NativePool(concurrency.get(BACKEND), 1)
        assert pool._pipe.read_fd >= 1024
        job = pool.submit('late', time.sleep, 0.05)
        finished = []
        deadline = time.monotonic() + 5
        while not finished and time.monotonic() < deadline:
            finished = pool.wait(1.0)
        assert finished == [job]
        pool.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
