"""Run functions in threads that take turns line by line inside chosen source files: a forced interleaving.

Under MultiGPU CFG split, ComfyUI evaluates cond and uncond at the same time in two threads through one patch
object. Races between them depend on where the interpreter switches threads; waiting for a lucky switch makes
a flaky test. Here every thread executes one line of the traced files, then hands the turn to the next, so
the threads interleave at every line of the code under test, the same way on every run.

A thread blocked in a lock held by another cannot take its turn; a waiting thread then proceeds after a short
timeout instead of dead-locking (counted in `timeouts`).
"""
from __future__ import annotations

import sys
import threading


class LockStep:
    def __init__(self, traced_files, timeout: float = 0.05):
        self.files = {str(f) for f in traced_files}
        self.timeout = timeout
        self._cond = threading.Condition()
        self._active: list[int] = []
        self._turn = 0
        self.switches = 0      # turns handed from one live thread to another
        self.timeouts = 0

    def _wait_turn(self, me: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._active[self._turn % len(self._active)] == me,
                                       timeout=self.timeout):
                self.timeouts += 1

    def _pass_turn(self, me: int) -> None:
        with self._cond:
            if len(self._active) > 1 and self._active[self._turn % len(self._active)] == me:
                self._turn += 1
                self.switches += 1
            self._cond.notify_all()

    def _tracer(self, me: int):
        def local(frame, event, arg):
            if event == "line":
                self._wait_turn(me)
                self._pass_turn(me)
            return local

        def on_call(frame, event, arg):
            if event == "call" and frame.f_code.co_filename in self.files:
                return local
            return None
        return on_call

    def run(self, *functions):
        """Call each function in a thread of its own, interleaved; returns their results in order."""
        results: list = [None] * len(functions)
        errors: list = []
        self._active = list(range(len(functions)))
        self._turn = 0

        def body(index, fn):
            sys.settrace(self._tracer(index))
            try:
                results[index] = fn()
            except BaseException as e:  # reported to the caller below
                errors.append(e)
            finally:
                sys.settrace(None)
                with self._cond:
                    current = self._active[self._turn % len(self._active)]
                    self._active.remove(index)
                    if self._active:
                        self._turn = self._active.index(current) if current in self._active else \
                            self._turn % len(self._active)
                    self._cond.notify_all()

        threads = [threading.Thread(target=body, args=(i, f)) for i, f in enumerate(functions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results
