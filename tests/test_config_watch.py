from pathlib import Path

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
    watcher.reload_requested = True
    forced = watcher.poll()
    assert forced is not None
    assert [s.name for s in forced.slos] == ["c"]
    path.unlink()
    assert watcher.poll() is None  # a vanished file keeps the running config
