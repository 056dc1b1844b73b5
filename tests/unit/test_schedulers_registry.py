"""lb.schedulers' registry and `lbd --scheduler-module` (lb/schedulers/plugins.py): what a
scheduler of one's own must be to be taken, and the one-line refusals when it is not."""
from __future__ import annotations

import pytest

from lb import schedulers
from lb.schedulers import plugins, rr
from lb.schedulers.base import Scheduler
from lb.schedulers.plugins import PluginError

PLUGIN = '''
from lb.schedulers.base import Scheduler

class First(Scheduler):
    name = "{name}"
    def schedule(self, service, flow):
        return service.dests[0] if service.dests else None

class Helper:          # not a Scheduler: left alone
    name = "helper"
'''


@pytest.fixture
def registry():
    """The registry as it was, back after the test."""
    before = dict(schedulers._REGISTRY)
    yield
    schedulers._REGISTRY.clear()
    schedulers._REGISTRY.update(before)


def test_the_built_in_schedulers_by_name():
    assert schedulers.names() == ["dh", "fo", "lblc", "lblcr", "lc", "mh", "nq", "ovf", "rr",
                                  "sed", "sh", "twos", "wlc", "wrr"]
    assert schedulers.get("rr") is rr.RoundRobin
    with pytest.raises(KeyError):
        schedulers.get("nosuch")


def test_register_takes_a_new_name_and_the_same_class_again_but_not_a_second_class(registry):
    class Mine(Scheduler):
        name = "mine"

    class Other(Scheduler):
        name = "mine"
    assert schedulers.register(Mine) is Mine and schedulers.get("mine") is Mine
    assert schedulers.register(Mine) is Mine                 # importing twice is harmless
    with pytest.raises(ValueError, match="scheduler 'mine' registered twice"):
        schedulers.register(Other)
    assert schedulers.get("mine") is Mine
    with pytest.raises(ValueError, match="scheduler 'rr' registered twice"):
        schedulers.register(type("RR2", (Scheduler,), {"name": "rr"}))


def test_a_module_file_registers_its_named_schedulers_only(registry, tmp_path):
    path = tmp_path / "mysched.py"
    path.write_text(PLUGIN.format(name="first"))
    assert plugins.load(str(path)) == ["first"]
    assert schedulers.get("first").__name__ == "First" and "helper" not in schedulers.names()


def test_a_dotted_module_name_is_imported(registry, tmp_path, monkeypatch):
    (tmp_path / "dotted_sched.py").write_text(PLUGIN.format(name="dotted"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.load("dotted_sched") == ["dotted"]


@pytest.mark.parametrize("text, refusal", [
    (None, "scheduler module {spec}: no such file"),
    ("raise RuntimeError('boom')\n", "scheduler module {spec}: RuntimeError: boom"),
    ("x = 1\n", "scheduler module {spec}: defines no Scheduler subclass with a name"),
    (PLUGIN.format(name="Bad-Name"), "scheduler module {spec}: bad scheduler name 'Bad-Name' "
     "(a-z, 0-9 and _, at most 15, starting with a letter)"),
    (PLUGIN.format(name="a" * 16), "scheduler module {spec}: bad scheduler name '" + "a" * 16
     + "' (a-z, 0-9 and _, at most 15, starting with a letter)"),
    (PLUGIN.format(name="wrr"), "scheduler module {spec}: 'wrr' is already a scheduler"),
])
def test_a_module_that_cannot_be_used_is_refused_in_one_line(registry, tmp_path, text, refusal):
    path = tmp_path / "bad.py"
    if text is not None:
        path.write_text(text)
    before = schedulers.names()
    with pytest.raises(PluginError) as e:
        plugins.load(str(path))
    assert str(e.value) == refusal.format(spec=path)
    assert schedulers.names() == before                      # nothing half-registered


def test_a_15_character_name_is_the_longest_taken(registry, tmp_path):
    path = tmp_path / "long.py"
    path.write_text(PLUGIN.format(name="a" * 15))
    assert plugins.load(str(path)) == ["a" * 15]
