import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sloeval.config.slo_file import load_slo_file
from sloeval.config.watch import ConfigWatcher

VALID = "service: s\nslos:\n  - name: {name}\n    objective: 99\n    ratio: {{bad: b, total: t}}\n"


def test_reloads_only_on_real_change_or_request_and_rejects_invalid(tmp_path: Path) -> None:
    path = tmp_path / "slos.yaml"
    path.write_text(VALID.format(name="a"))
    watcher = ConfigWatcher(load_slo_file(path), min_window=30)
    assert watcher.poll() is None
    path.write_text(VALID.format(name="a"))  # rewritten, same content: no reload
    assert watcher.poll() is None
    path.write_text(VALID.format(name="b"))
    new = watcher.poll()
    assert new is not None
    assert [s.name for s in new.slos] == ["b"]
    path.write_text("service: s\nslos: []\n")
    assert watcher.poll() is None  # invalid: rejected, the running config stays
    assert watcher.poll() is None  # and not retried every cycle
    path.write_text(VALID.format(name="c"))
    assert [s.name for s in (watcher.poll() or load_slo_file(path)).slos] == ["c"]
    watcher.request_reload()
    forced = watcher.poll(watcher.take_reload_request())
    assert forced is not None
    assert [s.name for s in forced.slos] == ["c"]
    path.unlink()
    assert watcher.poll() is None  # a vanished file keeps the running config


class PauseInPoll:
    """Runs ``ConfigWatcher.poll`` in a thread and holds it at one bytecode boundary of its own frame."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.executed = 0
        self.paused = threading.Event()
        self.resume = threading.Event()

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is ConfigWatcher.poll.__code__:
            frame.f_trace_opcodes = True
            return self._step
        return None

    def _step(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            if self.executed == self.at:
                self.paused.set()
                self.resume.wait(5)
            self.executed += 1
        return self._step

    def run(self, watcher: ConfigWatcher, forced: bool) -> threading.Thread:
        def target() -> None:
            sys.settrace(self._trace)
            try:
                watcher.poll(forced)
            finally:
                sys.settrace(None)
                self.paused.set()

        thread = threading.Thread(target=target)
        thread.start()
        return thread


def test_a_sighup_while_poll_runs_in_a_worker_thread_is_never_lost(tmp_path: Path) -> None:
    """The daemon: the loop takes the request and hands ``poll`` to a thread; the SIGHUP handler runs in the
    loop meanwhile. Asked at any bytecode boundary of ``poll``, the request is there for the next poll."""
    path = tmp_path / "slos.yaml"
    path.write_text(VALID.format(name="a"))
    watcher = ConfigWatcher(load_slo_file(path), min_window=30)
    dry = PauseInPoll(at=-1)
    dry.run(watcher, watcher.take_reload_request()).join()
    assert dry.executed > 10
    for at in range(dry.executed):
        pause = PauseInPoll(at)
        thread = pause.run(watcher, watcher.take_reload_request())
        assert pause.paused.wait(5)
        watcher.request_reload()  # the signal handler, in the loop's thread, while poll is held at ``at``
        pause.resume.set()
        thread.join(5)
        reloaded = watcher.poll(watcher.take_reload_request())
        assert reloaded is not None, f"the reload asked for at bytecode {at} of poll was lost"
