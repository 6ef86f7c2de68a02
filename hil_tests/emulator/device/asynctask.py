# asyncio's Task and TaskQueue on the virtual clock; emboot installs this module as
# `_asyncio` before the firmware imports asyncio, whose core then uses it instead of the
# interpreter's C version. The C version schedules "run now" tasks at the interpreter's own
# ticks_ms (the host's monotonic clock), which the virtual ticks of the `time` stand-in are
# not; here every key comes from the `time` stand-in.
# Same behaviour as MicroPython's extmod/modasyncio.c (state: True = running, None = done
# and not awaited, False = done and awaited, a TaskQueue of waiters, or a done callback).
# The queue is a list kept sorted by wake time (FIFO among equal times): a node runs a
# handful of tasks, so inserting into a short list beats a pairing heap's extra fields.

import time

_ctx = [None]  # asyncio.core's globals: cur_task, _task_queue, CancelledError


class TaskQueue:
    def __init__(self):
        self._q = []

    def peek(self):
        return self._q[0] if self._q else None

    def push(self, t, key=None):
        t.data = None
        t.ph_key = time.ticks_ms() if key is None else key
        q = self._q
        i = len(q)
        while i and time.ticks_diff(q[i - 1].ph_key, t.ph_key) > 0:
            i -= 1
        q.insert(i, t)

    def pop(self):
        return self._q.pop(0)

    def remove(self, t):
        if t in self._q:
            self._q.remove(t)


class Task:
    def __init__(self, coro, context=None):
        self.coro = coro
        self.data = None
        self.state = True
        self.ph_key = 0
        if context is not None:
            _ctx[0] = context

    def done(self):
        return not self.state

    def cancel(self):
        if not self.state:
            return False
        g = _ctx[0]
        if self is g["cur_task"]:
            raise RuntimeError("can't cancel self")
        t = self
        while isinstance(t.data, Task):
            t = t.data  # forward to the task it waits on
        q = g["_task_queue"]
        if hasattr(t.data, "remove"):
            # waiting on a queue (event, task, stream): take it off and run it now
            t.data.remove(t)
            q.push(t)
        elif time.ticks_diff(t.ph_key, time.ticks_ms()) > 0:
            # sleeping: bring it forward to now
            q.remove(t)
            q.push(t)
        t.data = g["CancelledError"]
        return True

    def __iter__(self):
        if not self.state:
            self.state = False  # done, and now awaited
        elif self.state is True:
            self.state = TaskQueue()  # the queue of tasks awaiting this one
        elif not isinstance(self.state, TaskQueue):
            raise RuntimeError("can't wait")
        return self

    def __next__(self):
        if not self.state:
            raise self.data  # its result (StopIteration) or its exception
        cur = _ctx[0]["cur_task"]
        self.state.push(cur)
        cur.data = self
