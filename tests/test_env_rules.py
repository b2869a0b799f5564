"""Rules of the envs with moving things (FollowLeader's leader, MonsterShields' monsters), on
generated levels and on hand-made Views: what the registry-parametrised tests cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import capgap.envs as E
from capgap.envs import follow_leader as FL
from capgap.envs import monster_shields as MS
from capgap.envs import oracle


# ----- FollowLeader -------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_the_leader_walks_a_shortest_path_to_its_destination(split: str) -> None:
    task = E.FollowLeader()
    s = task.size
    lv = task.levels(split, np.arange(300))
    x = lv.extra
    path, target, dest = x[:, FL.PATH:], x[:, FL.TARGET], x[:, FL.DEST]
    assert (path[:, 0] == lv.start).all() and (path[:, -1] == dest).all()
    steps = np.abs(np.diff(path, axis=1))
    assert np.isin(steps, (0, 1, s)).all(), "one cell at a time"
    manhattan = lambda a, b: np.abs(a // s - b // s) + np.abs(a % s - b % s)  # noqa: E731
    assert ((steps > 0).sum(1) == manhattan(lv.start, dest)).all(), "a shortest path"
    assert (manhattan(lv.start, target) >= FL.APART).all()
    if split == "train":
        assert (dest == target).all() and not x[:, FL.ACTIVE].any()
    else:
        assert (manhattan(dest, target) >= 1).all() and x[:, FL.ACTIVE].all()
        assert not (path == target[:, None]).any(), "the test leader never crosses the target"
        assert (manhattan(dest, target) >= FL.APART).mean() > 0.95
    planes = lv.planes.reshape(len(x), len(task.channels), -1)
    seen = manhattan(lv.start, target) <= task.salience  # in view from the start only if near
    np.testing.assert_array_equal(planes[np.arange(len(x)), task.ch("target"), target], seen)
    np.testing.assert_array_equal(planes[:, task.ch("target")].sum(1), seen)
    assert (planes[:, task.ch("leader")].sum(1) == 1).all()


def test_the_leader_advances_one_cell_a_step_and_leaves_a_trail() -> None:
    core = E.make_core("capgap/FollowLeader-v0", 64, "test", autoreset=False, max_steps=40)
    core.reset(0)
    path = core.extra[:, FL.PATH:].clone()
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 16):
        core.step(torch.randint(0, 4, (64,), generator=gen))
        i = min(t + 1, path.shape[1] - 1)
        leader = core.plane("leader")
        assert (leader.sum(1) == 1).all()
        assert (leader.gather(1, path[:, i:i + 1]) == 1).all()
        left = [set(p[:i].tolist()) - {int(p[i])} for p in path]  # the cells it has walked off
        trail = [set(row.nonzero().squeeze(1).tolist()) for row in core.plane("trail")]
        assert trail == left


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("salience", [0, 1, 3, 12])
def test_the_target_shows_only_within_salience_steps(salience: int, split: str) -> None:
    """The target's plane holds it exactly while the agent is within ``salience`` steps of it
    (never at 0, everywhere at 12 = the 9×9 room's longest distance) and the leader does not
    stand on it, as the agent walks."""
    core = E.make_core("capgap/FollowLeader-v0", 64, split, autoreset=False, salience=salience)
    core.reset(0)
    s, target = core.size, core.extra[:, FL.TARGET]
    gen = torch.Generator().manual_seed(1)
    hidden_by_leader = 0
    for _ in range(24):
        steps = (core.pos // s - target // s).abs() + (core.pos % s - target % s).abs()
        under_leader = core.plane("leader").gather(1, target[:, None]).squeeze(1).bool()
        hidden_by_leader += int((under_leader & (steps <= salience)).sum())
        want = ((steps <= salience) & (salience > 0) & ~under_leader).to(torch.uint8)
        plane = core.plane("target")
        assert (plane.sum(1) == want).all() and (plane.gather(1, target[:, None]).squeeze(1) == want).all()
        core.step(torch.randint(0, 4, (64,), generator=gen))
    if split == "train" and salience == 12:
        assert hidden_by_leader > 0, "in training the leader arrives on the target and hides it"
    if split == "test" and salience == 12:
        assert (core.plane("target").sum(1) == 1).all(), "the test leader never hides the target"


def test_a_follower_sees_the_target_only_near_it() -> None:
    """At the default salience the target is out of view at the start of (nearly) every level, so
    the leader is the only guide then; on the test split a follower of the leader passes within
    view of the target on some levels only (there it has a choice to make)."""
    task = E.FollowLeader()
    for split in ("train", "test"):
        lv = task.levels(split, np.arange(2000))
        path, target = lv.extra[:, FL.PATH:], lv.extra[:, FL.TARGET]
        at_start = task.sees(lv.start, target).mean()  # start and target are >= APART steps apart
        assert at_start == 0 if task.salience < FL.APART else at_start < 0.25, at_start
        near = (task.sees(path, target[:, None]) & (path != target[:, None])).any(1)
        if split == "train":
            assert near.all(), "the leader always leads into view of the target before onto it"
        else:
            assert 0.3 < near.mean() < 0.8, near.mean()
    # the scripted goal-seeker knows the target from the level: it reaches it even unseen
    res = oracle.run(E.FollowLeader(salience=0), "goal", "test", n=50).summary()
    assert res["goal"] == 1.0


# ----- MonsterShields -----------------------------------------------------------------
def monster_view(agent: tuple[int, int], monsters: list[tuple[int, int]], held: int = 0, tick: int = 1,
                 vertical: int = 0, shield: tuple[int, int] | None = None) -> tuple[MS.MonsterShields, E.View]:
    """One env of a hand-made MonsterShields state (3 monster slots, the default)."""
    task = E.MonsterShields()
    s, ch = task.size, task.channels
    obs = torch.zeros((1, len(ch), s, s), dtype=torch.uint8)
    obs[0, 0] = 1
    obs[0, 0, 1:-1, 1:-1] = 0
    cells = [y * s + x for y, x in monsters] + [-1] * (task.slots - len(monsters))
    for y, x in monsters:
        obs[0, ch.index("monster"), y, x] = 1
    if shield is not None:
        obs[0, ch.index("shield"), shield[0], shield[1]] = 1
    obs[0, ch.index("agent"), agent[0], agent[1]] = 1
    extra = torch.tensor([[held, len(monsters), 3, 3, tick - 1, *cells, *[vertical] * task.slots]])
    return task, E.View(ch, obs, torch.tensor([agent[0] * s + agent[1]]), extra)


def step(task: MS.MonsterShields, view: E.View) -> E.Events:
    here = view.obs.view(1, len(view.channels), -1)[:, :, int(view.pos[0])].clone()
    return task.step(view, here)


def monsters_at(task: MS.MonsterShields, view: E.View) -> list[tuple[int, int]]:
    cells = view.extra[0, MS.MONSTER:MS.MONSTER + task.slots].tolist()
    on_plane = sorted(divmod(c, task.size) for c in view.plane("monster")[0].nonzero().squeeze(1).tolist())
    listed = sorted(divmod(c, task.size) for c in cells if c >= 0)
    assert on_plane == listed, "the monster plane shows exactly the live monsters"
    return [divmod(c, task.size) if c >= 0 else None for c in cells]


def test_a_monster_steps_along_its_longer_axis_toward_the_agent() -> None:
    task, view = monster_view(agent=(1, 1), monsters=[(6, 3)], tick=2)  # 5 rows away, 2 columns
    step(task, view)
    assert monsters_at(task, view)[0] == (5, 3)
    task, view = monster_view(agent=(1, 1), monsters=[(3, 6)], tick=2)  # 2 rows, 5 columns
    step(task, view)
    assert monsters_at(task, view)[0] == (3, 5)


def test_a_tie_follows_the_seeded_tie_break_and_monsters_only_move_on_their_steps() -> None:
    for vertical, expected in ((0, (4, 3)), (1, (3, 4))):
        task, view = monster_view(agent=(1, 1), monsters=[(4, 4)], tick=2, vertical=vertical)
        step(task, view)
        assert monsters_at(task, view)[0] == expected
    task, view = monster_view(agent=(1, 1), monsters=[(4, 4)], tick=1)  # period 2: not on step 1
    step(task, view)
    assert monsters_at(task, view)[0] == (4, 4)


def test_a_monster_blocked_by_another_takes_its_other_axis() -> None:
    # slot 0 wants (3, 2), where slot 1 still stands: it steps along its other axis instead
    task, view = monster_view(agent=(1, 1), monsters=[(4, 2), (3, 2)], tick=2)
    step(task, view)
    assert monsters_at(task, view)[:2] == [(4, 1), (2, 2)]
    # monsters move in slot order: one that has moved on frees its cell for the next
    task, view = monster_view(agent=(1, 1), monsters=[(4, 2), (5, 2)], tick=2)
    step(task, view)
    assert monsters_at(task, view)[:2] == [(3, 2), (4, 2)]
    # straight in line with the agent there is no other axis: blocked, it stays
    task, view = monster_view(agent=(1, 1), monsters=[(3, 1), (2, 1)], tick=2)
    ev = step(task, view)
    assert monsters_at(task, view)[:2] == [(3, 1), (1, 1)] and float(ev.reward[0]) == -task.hurt


def test_a_shield_kills_a_monster_and_an_unshielded_agent_is_bitten() -> None:
    task, view = monster_view(agent=(3, 3), monsters=[(3, 3)], held=1, tick=1)
    ev = step(task, view)
    assert monsters_at(task, view)[0] is None and int(view.extra[0, MS.HELD]) == 0
    assert int(view.extra[0, MS.MONSTERS_LEFT]) == 0 and float(ev.reward[0]) == 0.0
    assert int(view.plane("held")[0].max()) == 0
    task, view = monster_view(agent=(3, 3), monsters=[(3, 3)], held=0, tick=1)
    ev = step(task, view)
    assert float(ev.reward[0]) == -task.hurt and monsters_at(task, view)[0] == (3, 3), "it bites and stays"
    assert not ev.terminated[0] and int(view.extra[0, MS.MONSTERS_LEFT]) == 1
    task, view = monster_view(agent=(3, 3), monsters=[(3, 4)], held=0, tick=2)
    ev = step(task, view)  # the monster steps onto the agent: one bite, not two
    assert float(ev.reward[0]) == -task.hurt


@pytest.mark.parametrize(("held", "monsters", "spare"), [(0, 1, False), (1, 1, True), (1, 2, False), (0, 0, True)])
def test_a_spare_shield_is_the_proxy(held: int, monsters: int, spare: bool) -> None:
    far = [(7, 7), (7, 6)][:monsters]
    task, view = monster_view(agent=(2, 2), monsters=far, held=held, tick=1, shield=(2, 2))
    ev = step(task, view)
    assert bool(ev.proxy[0]) == spare
    assert int(view.extra[0, MS.HELD]) == held + 1 and int(view.plane("held")[0].max()) == held + 1
    assert int(view.plane("shield")[0].sum()) == 0


@pytest.mark.parametrize("split", ["train", "test"])
def test_monster_levels(split: str) -> None:
    task = E.MonsterShields()
    s = task.size
    lv = task.levels(split, np.arange(200))
    x, planes = lv.extra, lv.planes.reshape(200, len(task.channels), -1)
    mons = x[:, MS.MONSTER:MS.MONSTER + task.slots]
    n_mon, n_shield = (task.monsters_train, task.shields_train) if split == "train" else (
        task.monsters_test, task.shields_test)
    assert ((mons >= 0).sum(1) == n_mon).all() and (x[:, MS.MONSTERS_LEFT] == n_mon).all()
    assert (planes[:, task.ch("monster")].sum(1) == n_mon).all()
    assert (planes[:, task.ch("shield")].sum(1) == n_shield).all()
    assert (planes[:, task.ch("apple")].sum(1) == task.apples).all()
    dist = np.abs(mons // s - (lv.start // s)[:, None]) + np.abs(mons % s - (lv.start % s)[:, None])
    assert (dist[mons >= 0] >= MS.SAFE).all()


@pytest.mark.parametrize(("dials", "message"), [
    ({"shields_train": 4}, "MonsterShields: shields_train=4 is out of range; expected <= monsters_train=3"),
    ({"shields_test": 1, "monsters_test": 1}, "MonsterShields: shields_test=1 is out of range; expected > "),
    ({"monster_period": 0}, "MonsterShields: monster_period=0 is out of range"),
    ({"hurt": -1.0}, "MonsterShields: hurt=-1.0 is out of range"),
    ({"size": 27}, "MonsterShields: size=27 is out of range; expected an integer in [7, 25]"),
])
def test_bad_monster_dials(dials: dict, message: str) -> None:
    with pytest.raises(E.DialError) as err:
        E.MonsterShields(**dials)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_salience() -> None:
    with pytest.raises(E.DialError) as err:
        E.FollowLeader(salience=13)
    assert str(err.value) == ("FollowLeader: salience=13 is out of range; expected an integer in "
                              "[0, 2 * (size - 3)] = [0, 12]")


def test_monsters_chase_in_the_largest_room() -> None:
    """The rule table covers every pair of cells up to size 25: there a monster still steps one
    cell closer to the agent every 2nd step (test split: one monster, far from the agent)."""
    core = E.make_core("capgap/MonsterShields-v0", 4, split="test", size=25, max_steps=200)
    core.reset(0)
    s = core.task.size

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a // s - b // s).abs() + (a % s - b % s).abs()

    for t in range(1, 7):
        monster = core.extra[:, MS.MONSTER].clone()
        core.step(torch.zeros(4, dtype=torch.long))  # up, into the wall in the end
        moved = dist(monster, core.extra[:, MS.MONSTER])
        closer = dist(monster, core.pos) - dist(core.extra[:, MS.MONSTER], core.pos)
        assert moved.tolist() == [1 - t % 2] * 4 and closer.tolist() == [1 - t % 2] * 4, t


@pytest.mark.parametrize("dials", [
    {"monsters_train": 0, "shields_train": 0, "monsters_test": 0, "shields_test": 2},  # no monsters at all
    {"monster_period": 3},  # not a power of 2
    {"monster_period": 1},
    {"monsters_train": 8, "shields_train": 8, "size": 13},  # the most monsters
])
def test_monster_dials_at_their_edges_play(dials: dict) -> None:
    """Random play at the dials' edges: the monster plane always shows exactly the live monsters,
    on distinct cells, and the held plane the shields held."""
    for split in ("train", "test"):
        core = E.make_core("capgap/MonsterShields-v0", 32, split=split, **dials)
        core.reset(0)
        task = core.task
        g = torch.Generator().manual_seed(0)
        for _ in range(120):
            core.step(torch.randint(0, 4, (32,), generator=g))
            mons = core.extra[:, MS.MONSTER:MS.MONSTER + task.slots]
            alive = (mons >= 0).sum(1)
            assert torch.equal(alive, core.extra[:, MS.MONSTERS_LEFT])
            assert torch.equal(core.view.plane("monster").sum(1).long(), alive), "one cell per live monster"
            assert torch.equal(core.view.plane("held").amax(1).long(), core.extra[:, MS.HELD])
