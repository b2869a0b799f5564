"""The worked example of docs/adding_an_env.md really works: load it, register it, certify it."""

from __future__ import annotations

import functools
import re
import sys
import types
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import capgap.envs as E
from capgap.envs import oracle

DOC = Path(__file__).parent.parent / "docs" / "adding_an_env.md"


def test_adding_an_env_example(monkeypatch: pytest.MonkeyPatch) -> None:
    source = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    module = types.ModuleType("capgap.envs.cheese_twins")
    module.__package__ = "capgap.envs"
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look the module up
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    task = module.CheeseTwins
    env_id = "capgap/CheeseTwins-v0"
    monkeypatch.setitem(E.TASKS, env_id, task)
    monkeypatch.setitem(E.BUDGETS, env_id, 1_000_000)
    monkeypatch.setitem(gym.registry, env_id, gym.envs.registration.EnvSpec(
        env_id, entry_point=functools.partial(E.CapgapEnv, task),
        vector_entry_point=functools.partial(E.CapgapVectorEnv, task)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, split="test", render_mode="ansi").unwrapped)
    checks = oracle.certify(env_id, n=300)
    assert len(checks) == 7 and all(c.ok for c in checks), [c for c in checks if not c.ok]
