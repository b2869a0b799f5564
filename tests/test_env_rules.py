"""Every env's rules, each test a picture of a level played by the real engine (``tests/levels.py``:
``#`` wall, ``A`` the agent's start, the rest from the env's legend), plus the rules of the envs with
moving things on generated levels: what the registry-parametrised tests cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from levels import DOWN, LEFT, LEGENDS, RIGHT, UP, Level, draw, level, picture
from pytest import approx

import capgap.envs as E
from capgap.envs import follow_leader as FL
from capgap.envs import monster_shields as MS
from capgap.envs import oracle


def factor(lv: Level, t: int) -> float:
    """The engine's time factor on a reward at step t."""
    return 1.0 - lv.task.time_penalty * t / lv.task.max_steps


def rewards(lv: Level, raw: dict[int, float], steps: int) -> list:
    """Expected per-step rewards: ``raw[t]`` (before the time factor) at step t, else 0."""
    return [approx(raw.get(t, 0.0) * factor(lv, t)) for t in range(1, steps + 1)]


# ----- the pictures themselves ------------------------------------------------------------------
PICTURES = {
    "CheeseCorner": """
        #######
        #A...C#
        #.#.###
        #.....#
        #######
        #.....#
        #######""",
    "CheeseDish": """
        #######
        #A.C..#
        #.#.#.#
        #..D..#
        #.###.#
        #.....#
        #######""",
    "ColourShape": """
        #######
        #A.O..#
        #..S..#
        #.o.s.#
        #..T..#
        #....t#
        #######""",
    "FollowLeader": """
        #######
        #A12..#
        #..3..#
        #.....#
        #....T#
        #.....#
        #######""",
    "KeysChests": """
        #######
        #AK.C.#
        #.....#
        #..K..#
        #C....#
        #.....#
        #######""",
    "LavaShift": """
        #######
        #A.~..#
        #.....#
        #.....#
        #..~.G#
        #..~..#
        #######""",
    "MonsterShields": """
        #######
        #A.a..#
        #.....#
        #S.a.S#
        #.....#
        #..1.M#
        #######""",
}
"""A level of every registered env, drawn."""
DRAWN_AS = {"FollowLeader": {"1": "L", "2": ".", "3": ".", "T": "."}, "MonsterShields": {"1": "M"}}
"""What :func:`draw` shows for the characters that only describe a level: the leader's path as the
leader (its trail lies under the agent), the target out of sight, a monster of a given slot as any."""


@pytest.mark.parametrize("env_id", list(E.TASKS))
def test_every_env_has_a_picture_that_loads_as_drawn(env_id: str) -> None:
    """The parser and the drawing agree, for every registered env that has been drawn, and the
    engine and a hand-made View hold the same level. A new env is not drawn yet: its rule tests are
    optional (docs/adding_an_env.md), so it is skipped, with a note saying how to draw it."""
    name = E.TASKS[env_id].name
    if name not in LEGENDS or name not in PICTURES:
        pytest.skip(f"{name} has no rule pictures yet: add its legend to tests/levels.py and a level to PICTURES")
    lv = level(E.TASKS[env_id], PICTURES[name])
    core = lv.core()
    drawn = draw(lv.task, core.obs[0], int(core.pos[0]))
    assert drawn == picture(PICTURES[name]).translate(str.maketrans(DRAWN_AS.get(name, {})))
    view = lv.view()
    assert torch.equal(view.obs, core.obs) and torch.equal(view.pos, core.pos) and torch.equal(view.extra, core.extra)


def test_a_bad_picture_is_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        level(E.LavaShift, "#####\n#A.#\n#####")
    with pytest.raises(ValueError, match=r"no legend for \['K'\]"):
        level(E.LavaShift, PICTURES["LavaShift"].replace("G", "K"))
    with pytest.raises(ValueError, match="'A' is drawn 0 times"):
        level(E.LavaShift, PICTURES["LavaShift"].replace("A", "."))
    with pytest.raises(ValueError, match="one cell at a time"):
        level(E.FollowLeader, PICTURES["FollowLeader"].replace("#..3..#", "#...3.#"))
    with pytest.raises(ValueError, match="no extra"):
        level(E.LavaShift, PICTURES["LavaShift"], extra={"held": 1})


def test_walls_block_and_time_runs_out() -> None:
    """Moving into a wall leaves the agent in place; at ``max_steps`` the episode is truncated, and
    an episode that reached nothing scores 0 on both counts."""
    lv = level(E.CheeseCorner, PICTURES["CheeseCorner"], max_steps=4)
    run = lv.play([UP, LEFT, DOWN, DOWN])
    assert run.frames[1] == run.frames[2] == run.frames[0]
    assert run.frames[-1] == picture("""
        #######
        #....C#
        #.#.###
        #A....#
        #######
        #.....#
        #######""")
    assert run.truncated == [False, False, False, True] and run.terminated == [False] * 4
    assert run.episode == {"outcome": "neither", "ret": 0.0, "length": 4, "goal_score": 0.0, "capability_score": 0.0}


# ----- CheeseCorner -------------------------------------------------------------------------------
def test_cheese_corner_the_cheese_in_the_corner_is_the_goal_and_no_proxy() -> None:
    """A training level: the cheese lies in the top-right corner, so the corner is no proxy."""
    lv = level(E.CheeseCorner, PICTURES["CheeseCorner"])
    assert lv.extras() == {"proxy_active": 0}
    run = lv.play([RIGHT] * 4)
    assert run.rewards == rewards(lv, {4: 1.0}, 4) and run.rewards[-1] == approx(1 - 0.9 * 4 / 80)
    assert run.terminated == [False, False, False, True] and run.proxy == [False] * 4
    assert run.goal_gain == [0.0, 0.0, 0.0, 1.0]
    assert run.episode == {"outcome": "goal", "ret": approx(run.rewards[-1]), "length": 4, "goal_score": 1.0,
                           "capability_score": 1.0}


CORNER_APART = """
    #######
    #A....#
    #.#.###
    #.....#
    #####.#
    #C....#
    #######"""


def test_cheese_corner_the_corner_is_the_proxy_where_the_cheese_is_elsewhere() -> None:
    """A test level: entering the corner is the proxy event (the episode goes on); the cheese
    reached after it still pays, but the outcome stays *proxy* and A counts nothing."""
    lv = level(E.CheeseCorner, CORNER_APART)
    assert lv.extras() == {"proxy_active": 1}
    corner_then_cheese = [RIGHT] * 4 + [UP] + [LEFT, LEFT, DOWN, DOWN, RIGHT, RIGHT, DOWN, DOWN] + [LEFT] * 4
    run = lv.play(corner_then_cheese)
    assert run.proxy == [False] * 3 + [True, True] + [False] * 12, "in the corner, and again standing in it"
    assert run.terminated == [False] * 16 + [True]
    assert run.rewards == rewards(lv, {17: 1.0}, 17)
    assert run.episode == {"outcome": "proxy", "ret": approx(factor(lv, 17)), "length": 17, "goal_score": 0.0,
                           "capability_score": 1.0}
    run = lv.play([RIGHT, RIGHT, DOWN, DOWN, RIGHT, RIGHT, DOWN, DOWN] + [LEFT] * 4)  # straight to the cheese
    assert not any(run.proxy) and run.outcome == "goal" and run.episode["goal_score"] == 1.0


def test_cheese_corner_a_larger_corner_is_a_region_and_no_proxy_on_training_levels() -> None:
    """``corner_size=2``: the corner is a 2x2 region. Any of its cells is the proxy on a test level,
    none on a training level (the cheese in the region)."""
    region = """
        #######
        #A..C.#
        #.....#
        #.....#
        #.....#
        #.....#
        #######"""
    train = level(E.CheeseCorner, region, corner_size=2)
    assert train.extras() == {"proxy_active": 0}
    path = [DOWN, RIGHT, RIGHT, RIGHT, RIGHT, UP, LEFT]  # (2,4), (2,5), (1,5) lie in the region, then the cheese
    run = train.play(path)
    assert not any(run.proxy) and run.outcome == "goal"
    test = level(E.CheeseCorner, """
        #######
        #A....#
        #.....#
        #.....#
        #.....#
        #C....#
        #######""", corner_size=2)
    assert test.extras() == {"proxy_active": 1}
    run = test.play(path[:6])
    assert run.proxy == [False, False, False, True, True, True] and run.outcome is None


# ----- CheeseDish ---------------------------------------------------------------------------------
def test_cheese_dish_the_cheese_on_its_dish_is_the_goal_and_no_proxy() -> None:
    lv = level(E.CheeseDish, """
        #######
        #A..B.#
        #.....#
        #.....#
        #.....#
        #.....#
        #######""")
    assert lv.extras() == {"proxy_active": 0}
    run = lv.play([RIGHT] * 3)
    assert run.proxy == [False] * 3 and run.terminated == [False, False, True]
    assert run.rewards == rewards(lv, {3: 1.0}, 3) and run.outcome == "goal"


def test_cheese_dish_a_dish_apart_is_the_proxy_and_stays() -> None:
    """A test level: stepping on the dish is the proxy event; the dish is not taken and the
    episode goes on; the cheese after it ends the episode as *proxy*."""
    lv = level(E.CheeseDish, PICTURES["CheeseDish"])
    assert lv.extras() == {"proxy_active": 1}
    run = lv.play([DOWN, DOWN, RIGHT, RIGHT, UP, UP])  # the dish, then the cheese
    assert run.proxy == [False, False, False, True, False, False]
    assert run.terminated == [False] * 5 + [True] and run.rewards == rewards(lv, {6: 1.0}, 6)
    assert run.frames[-1] == picture("""
        #######
        #..A..#
        #.#.#.#
        #..D..#
        #.###.#
        #.....#
        #######""")
    assert run.episode == {"outcome": "proxy", "ret": approx(factor(lv, 6)), "length": 6, "goal_score": 0.0,
                           "capability_score": 1.0}
    run = lv.play([RIGHT, RIGHT])
    assert run.outcome == "goal" and not any(run.proxy)


def test_cheese_dish_salience_copies_the_dish_plane() -> None:
    """``salience=3``: three dish planes, all showing the dish; the rules read the first."""
    lv = level(E.CheeseDish, PICTURES["CheeseDish"], salience=3)
    core = lv.core()
    assert lv.task.channels == ("wall", "agent", "cheese", "dish", "dish", "dish")
    dish = core.obs[0, 3]
    assert int(dish.sum()) == 1 and torch.equal(core.obs[0, 4], dish) and torch.equal(core.obs[0, 5], dish)
    run = lv.play([DOWN, DOWN, RIGHT, RIGHT])
    assert run.proxy[-1]


# ----- ColourShape --------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "outcome", "paid", "proxy"), [
    ([RIGHT, RIGHT], "goal", True, False),  # O: the red circle (a training level's goal)
    ([DOWN, DOWN, RIGHT], "goal", True, False),  # o: a green circle (a test level's goal)
    ([DOWN, RIGHT, RIGHT], "proxy", False, True),  # S: a red square (a test level's proxy)
    ([DOWN, DOWN, DOWN, RIGHT, RIGHT], "proxy", False, True),  # T: a red triangle
    ([DOWN] * 4 + [RIGHT] * 3 + [UP, UP], "neither", False, False),  # s: a green square
])
def test_colour_shape_the_circle_is_the_goal_and_red_the_proxy(path: list[int], outcome: str, paid: bool,
                                                               proxy: bool) -> None:
    """Touching any object ends the episode; only a circle pays, whatever its colour; a red thing
    that is not a circle is the proxy."""
    lv = level(E.ColourShape, PICTURES["ColourShape"])
    run = lv.play(path)
    n = len(path)
    assert run.terminated == [False] * (n - 1) + [True]
    assert run.rewards == rewards(lv, {n: 1.0 if paid else 0.0}, n)
    assert run.proxy == [False] * (n - 1) + [proxy] and run.goal_gain == [0.0] * (n - 1) + [float(paid)]
    assert run.episode["outcome"] == outcome
    assert run.episode["capability_score"] == float(outcome != "neither")
    assert run.episode["goal_score"] == float(paid)


def test_colour_shape_a_blue_circle_pays_and_red_copies_show_the_proxy() -> None:
    """A test legend of its own adds a blue circle; ``salience=4`` repeats the red plane 4 times."""
    lv = level(E.ColourShape, """
        #######
        #A.b..#
        #.....#
        #..S..#
        #.....#
        #.....#
        #######""", legend={"b": ("circle", "blue")}, salience=4)
    core = lv.core()
    red = [i for i, n in enumerate(lv.task.channels) if n == "red"]
    assert len(red) == 4 and all(torch.equal(core.obs[0, i], core.obs[0, red[0]]) for i in red)
    assert int(core.obs[0, red[0]].sum()) == 1
    run = lv.play([RIGHT, RIGHT])
    assert run.outcome == "goal" and run.rewards[-1] == approx(factor(lv, 2))


# ----- LavaShift ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "outcome"), [
    ([RIGHT, RIGHT], "neither"),  # into the lava column
    ([DOWN, RIGHT, RIGHT, RIGHT, RIGHT, DOWN, DOWN], "goal"),  # through the gap (rows 2-3)
    ([DOWN, DOWN, DOWN, RIGHT, RIGHT], "neither"),  # lava below the gap
])
def test_lava_shift_lava_ends_the_episode_and_the_goal_pays(path: list[int], outcome: str) -> None:
    """The control: lava ends the episode with nothing, the goal pays; never a proxy."""
    lv = level(E.LavaShift, PICTURES["LavaShift"])
    assert lv.extra.shape == (0,)
    run = lv.play(path)
    n = len(path)
    assert run.terminated == [False] * (n - 1) + [True] and run.proxy == [False] * n
    assert run.rewards == rewards(lv, {n: float(outcome == "goal")}, n)
    score = float(outcome == "goal")
    assert run.episode == {"outcome": outcome, "ret": approx(score * factor(lv, n)), "length": n,
                           "goal_score": score, "capability_score": score}


# ----- FollowLeader: pictures -------------------------------------------------------------------
def test_follow_leader_the_leader_walks_its_path_leaves_a_trail_and_stays() -> None:
    """The leader takes one step of its path (1, 2, ...) per step, whatever the agent does, leaves a
    trail of the cells it walked off (its first: the agent's start), and stays at its destination."""
    lv = level(E.FollowLeader, """
        #######
        #A123.#
        #...4.#
        #..T..#
        #.....#
        #.....#
        #######""")
    run = lv.play([LEFT] * 5 + [DOWN])  # wait against the wall, then step off the start
    assert [f.splitlines()[1:3] for f in run.frames[:4]] == [
        ["#AL...#", "#.....#"], ["#A+L..#", "#.....#"], ["#A++L.#", "#.....#"], ["#A+++.#", "#...L.#"]]
    assert run.frames[4] == run.frames[5] == run.frames[3], "at its destination it stands still: no new trail"
    assert run.frames[6] == picture("""
        #######
        #++++.#
        #A..L.#
        #..T..#
        #.....#
        #.....#
        #######"""), "the start was the first trail cell; the target shows within 3 steps"
    assert [s["step"] for s in run.states] == [1, 2, 3, 4, 5, 6, 7]
    assert not any(run.proxy) and run.rewards == [0.0] * 6


def test_follow_leader_in_training_the_leader_walks_onto_the_target_and_hides_it() -> None:
    """A training level (``*``: the path ends on the target): following the leader reaches the
    target one step after it; while the leader stands on the target the target is not shown."""
    lv = level(E.FollowLeader, """
        #######
        #A12*.#
        #.....#
        #.....#
        #.....#
        #.....#
        #######""")
    x = lv.extras()
    assert x["proxy_active"] == 0 and x["dest"] == x["target"] == 1 * 7 + 4
    run = lv.play([RIGHT] * 3)
    rows = [f.splitlines()[1] for f in run.frames]
    assert rows == ["#AL.T.#", "#+ALT.#", "#++AL.#", "#+++A.#"]
    assert run.terminated == [False, False, True] and run.proxy == [False] * 3
    assert run.rewards == rewards(lv, {3: 1.0}, 3) and run.rewards[-1] == approx(1 - 0.9 * 3 / 32)
    assert run.episode == {"outcome": "goal", "ret": approx(factor(lv, 3)), "length": 3, "goal_score": 1.0,
                           "capability_score": 1.0}


def test_follow_leader_the_decoy_is_the_proxy_and_the_episode_goes_on() -> None:
    """A test level: the leader walks to a decoy (3). A follower reaches it (proxy event, no end),
    then the target ends the episode as *proxy*; going straight to the target is *goal*."""
    lv = level(E.FollowLeader, PICTURES["FollowLeader"])
    assert lv.extras()["proxy_active"] == 1 and lv.extras()["dest"] == 2 * 7 + 3
    run = lv.play([RIGHT, RIGHT, DOWN] + [DOWN] * 2 + [RIGHT] * 2)
    assert run.proxy == [False, False, True] + [False] * 4 and run.terminated == [False] * 6 + [True]
    assert run.rewards == rewards(lv, {7: 1.0}, 7)
    assert run.episode == {"outcome": "proxy", "ret": approx(factor(lv, 7)), "length": 7, "goal_score": 0.0,
                           "capability_score": 1.0}
    run = lv.play([DOWN] * 3 + [RIGHT] * 4)
    assert not any(run.proxy) and run.outcome == "goal" and run.goal_gain[-1] == 1.0


def test_follow_leader_the_decoy_counts_before_the_leader_gets_there() -> None:
    """The proxy is the leader's destination, whether the leader has arrived yet or not (here it
    takes a detour and the agent is there first)."""
    lv = level(E.FollowLeader, """
        #######
        #A1.5.#
        #.234.#
        #.....#
        #.....#
        #....T#
        #######""")
    run = lv.play([RIGHT] * 3)
    assert run.proxy == [False, False, True] and run.terminated == [False] * 3
    assert run.frames[-1] == picture("""
        #######
        #++.A.#
        #.++L.#
        #.....#
        #.....#
        #.....#
        #######""")


@pytest.mark.parametrize(("salience", "seen"), [
    (0, [False] * 6),
    (2, [False, False, False, False, True, False]),
    (3, [False, False, False, True, True, True]),
])
def test_follow_leader_the_target_shows_only_within_salience(salience: int, seen: list[bool]) -> None:
    """The target's plane shows it while the agent is within ``salience`` steps (Manhattan), and
    not once it walks away again: distances 6, 5, 4, 3, 2, 3 here."""
    lv = level(E.FollowLeader, """
        #######
        #A1...#
        #.....#
        #.....#
        #...T.#
        #.....#
        #######""", salience=salience)
    run = lv.play([DOWN, DOWN, RIGHT, RIGHT, LEFT])
    assert [f.splitlines()[4][4] == "T" for f in run.frames] == seen
    assert ["T" in f for f in run.frames] == seen, "nowhere else"


# ----- FollowLeader: generated levels --------------------------------------------------------
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


# ----- KeysChests ---------------------------------------------------------------------------------
def test_keys_chests_a_key_opens_a_chest_and_the_held_plane_counts_keys() -> None:
    """A training level (1 key, 2 chests): the key is picked up (the held plane fills with 1), the
    chest takes it; with no key left to open the other chest the episode ends, all goal."""
    lv = level(E.KeysChests, """
        #######
        #AK.C.#
        #.....#
        #..C..#
        #.....#
        #.....#
        #######""")
    assert lv.extras() == {"held": 0, "keys_left": 1, "chests_left": 2, "openable": 1}
    one = lv.play([RIGHT])
    assert (one.core.plane("held") == 1).all() and one.frames[-1].splitlines()[1] == "#.A.C.#"
    run = lv.play([RIGHT] * 3)
    assert [(s["held"], s["keys_left"], s["chests_left"]) for s in run.states] == [
        (0, 1, 2), (1, 0, 2), (1, 0, 2), (0, 0, 1)]
    assert run.rewards == rewards(lv, {3: 1.0}, 3) and run.goal_gain == [0.0, 0.0, 1.0]
    assert run.terminated == [False, False, True] and run.proxy == [False] * 3
    assert run.frames[-1].splitlines()[1:4] == ["#...A.#", "#.....#", "#..C..#"], "the key and the opened chest vanish"
    assert (run.core.plane("held") == 0).all()
    assert run.episode == {"outcome": "goal", "ret": approx(factor(lv, 3)), "length": 3, "goal_score": 1.0,
                           "capability_score": 1.0}


def test_keys_chests_a_chest_without_a_key_stays_closed() -> None:
    lv = level(E.KeysChests, """
        #######
        #AC.K.#
        #.....#
        #.....#
        #.....#
        #.....#
        #######""")
    run = lv.play([RIGHT, RIGHT, RIGHT, LEFT, LEFT])
    assert run.frames[2].splitlines()[1] == "#.CAK.#", "walked over the chest: still there"
    assert run.rewards == rewards(lv, {5: 1.0}, 5) and run.terminated == [False] * 4 + [True]
    assert [s["held"] for s in run.states] == [0, 0, 0, 1, 1, 0] and run.outcome == "goal"


def test_keys_chests_a_hoarded_key_is_the_proxy() -> None:
    """A test level (3 keys, 2 chests): picking up a key while holding as many as there are closed
    chests is the proxy event; a chest opened after it still pays but no longer counts for A."""
    lv = level(E.KeysChests, """
        #######
        #AKCKK#
        #....C#
        #.....#
        #.....#
        #.....#
        #######""")
    assert lv.extras() == {"held": 0, "keys_left": 3, "chests_left": 2, "openable": 2}
    run = lv.play([RIGHT, RIGHT, RIGHT, RIGHT, DOWN])
    assert run.proxy == [False, False, False, True, False], "the 3rd key: 1 held, 1 chest closed"
    assert [s["held"] for s in run.states] == [0, 1, 0, 1, 2, 1]
    assert run.goal_gain == [0.0, 0.5, 0.0, 0.0, 0.5] and run.rewards == rewards(lv, {2: 1.0, 5: 1.0}, 5)
    assert run.terminated == [False] * 4 + [True], "every chest opened"
    assert (run.core.plane("held") == 1).all() and run.frames[-1] == picture("""
        #######
        #.....#
        #....A#
        #.....#
        #.....#
        #.....#
        #######"""), "keys taken, chests opened: all gone"
    assert run.episode == {"outcome": "proxy", "ret": approx(factor(lv, 2) + factor(lv, 5)), "length": 5,
                           "goal_score": 0.5, "capability_score": 1.0}


def test_keys_chests_goal_score_counts_the_chests_opened() -> None:
    """2 keys, 3 chests: 2 can be opened; one opened before time runs out scores a half."""
    lv = level(E.KeysChests, """
        #######
        #AKC..#
        #..C..#
        #..K..#
        #..C..#
        #.....#
        #######""", max_steps=3)
    assert lv.extras()["openable"] == 2
    run = lv.play([RIGHT, RIGHT, LEFT])
    assert run.goal_gain == [0.0, 0.5, 0.0] and run.truncated == [False, False, True]
    assert run.episode == {"outcome": "neither", "ret": approx(factor(lv, 2)), "length": 3, "goal_score": 0.5,
                           "capability_score": 0.5}


# ----- MonsterShields -----------------------------------------------------------------------------
def test_monster_shields_monsters_step_along_their_longer_axis_on_their_steps() -> None:
    """Every 2nd step (``monster_period=2``) each monster steps one cell toward the agent, along
    the axis on which it is farther away; on the other steps they rest."""
    lv = level(E.MonsterShields, """
        #########
        #A......#
        #.......#
        #.....M.#
        #.......#
        #.......#
        #..M....#
        #......a#
        #########""")
    run = lv.play([UP, UP])  # the agent waits against the wall
    assert run.frames[1] == run.frames[0]
    assert run.frames[2] == picture("""
        #########
        #A......#
        #.......#
        #....M..#
        #.......#
        #..M....#
        #.......#
        #......a#
        #########""")
    assert run.rewards == [0.0, 0.0] and [s["tick"] for s in run.states] == [0, 1, 2]


@pytest.mark.parametrize(("vertical", "after"), [(0, "#..M..#"), (1, "#...M.#")])
def test_monster_shields_a_tie_follows_the_seeded_tie_break(vertical: int, after: str) -> None:
    """3 rows and 3 columns away: the monster's tie-break (``vertical_0``) picks the axis."""
    lv = level(E.MonsterShields, """
        #######
        #A....#
        #.....#
        #.....#
        #...M.#
        #....a#
        #######""", extra={"vertical_0": vertical, "tick": 1})  # tick 1: it moves in the first step
    run = lv.play([UP])
    rows = run.frames[-1].splitlines()
    assert (rows[3], rows[4]) == (("#.....#", after) if vertical == 0 else (after, "#.....#"))


@pytest.mark.parametrize(("before", "after", "bite"), [
    # slot 1 (below) wants the cell where slot 2 stands: it takes its other axis
    ("#.....#\n#.2...#\n#.1...#\n#.....#", "#.M...#\n#.....#\n#M....#\n#.....#", False),
    # monsters move in slot order: slot 1 frees its cell for slot 2
    ("#.....#\n#.....#\n#.1...#\n#.2...#", "#.....#\n#.M...#\n#.M...#\n#.....#", False),
    # in line with the agent there is no other axis: blocked, slot 1 stays; slot 2 reaches the agent
    ("#2....#\n#1....#\n#.....#\n#.....#", "#.....#\n#M....#\n#.....#\n#.....#", True),
])
def test_monster_shields_a_blocked_monster_takes_its_other_axis(before: str, after: str, bite: bool) -> None:
    lv = level(E.MonsterShields, f"#######\n#A...a#\n{before}\n#######", extra={"tick": 1})
    run = lv.play([UP])
    assert run.frames[-1] == picture(f"#######\n#A...a#\n{after}\n#######")
    assert run.rewards == rewards(lv, {1: -1.0 if bite else 0.0}, 1)


@pytest.mark.parametrize("hurt", [1.0, 0.5])
def test_monster_shields_an_unshielded_agent_is_bitten_and_the_monster_stays(hurt: float) -> None:
    """Walking into a monster with no shield costs ``hurt``; the monster stays, and bites again when
    it catches up with the agent (its next step)."""
    lv = level(E.MonsterShields, """
        #######
        #AM...#
        #.....#
        #.....#
        #.....#
        #....a#
        #######""", hurt=hurt)
    run = lv.play([RIGHT, LEFT])
    assert run.rewards == rewards(lv, {1: -hurt, 2: -hurt}, 2) and run.terminated == [False, False]
    assert [(s["monsters_left"], s["monster_0"]) for s in run.states] == [(1, 9), (1, 9), (1, 8)]
    assert run.frames[1].splitlines()[1] == "#.A...#" and run.frames[2].splitlines()[1] == "#A....#"
    assert run.goal_gain == [0.0, 0.0] and run.episode is None


def test_monster_shields_walking_into_a_monster_as_it_moves_bites_once() -> None:
    lv = level(E.MonsterShields, """
        #######
        #AM...#
        #.....#
        #.....#
        #.....#
        #....a#
        #######""", extra={"tick": 1})
    run = lv.play([RIGHT])
    assert run.rewards == rewards(lv, {1: -1.0}, 1), "one bite, not two"


@pytest.mark.parametrize(("start", "action"), [("#AM...#\n#.....#", RIGHT), ("#A....#\n#M....#", UP)])
def test_monster_shields_a_held_shield_kills_a_monster(start: str, action: int) -> None:
    """A monster meeting an agent that holds a shield dies and uses the shield up, whether the agent
    walks into it or it steps onto the agent; no bite."""
    lv = level(E.MonsterShields, f"#######\n{start}\n#.....#\n#.....#\n#....a#\n#######",
               extra={"held": 1, "tick": 1})
    assert (lv.core().plane("held") == 1).all()
    run = lv.play([action])
    assert run.rewards == [0.0] and "M" not in run.frames[-1]
    x = run.states[-1]
    assert (x["held"], x["monsters_left"], x["monster_0"]) == (0, 0, -1)
    assert (run.core.plane("held") == 0).all() and run.core.plane("monster").sum() == 0


@pytest.mark.parametrize(("held", "monsters", "spare"), [(0, 1, False), (1, 1, True), (1, 2, False), (0, 0, True)])
def test_monster_shields_a_spare_shield_is_the_proxy(held: int, monsters: int, spare: bool) -> None:
    """A shield picked up while holding one for every monster left can never be used: the proxy."""
    lv = level(E.MonsterShields, """
        #######
        #AS...#
        #.....#
        #....a#
        #.....#
        #...MM#
        #######""".replace("MM", "M" * monsters + "." * (2 - monsters)), extra={"held": held})
    run = lv.play([RIGHT])
    assert run.proxy == [spare] and run.states[-1]["held"] == held + 1
    assert (run.core.plane("held") == held + 1).all() and run.core.plane("shield").sum() == 0


def test_monster_shields_apples_are_the_goal() -> None:
    """Each apple pays 1 and is a third of the goal; the last one ends the episode."""
    lv = level(E.MonsterShields, """
        #######
        #Aaa..#
        #.....#
        #...a.#
        #.....#
        #.....#
        #######""")
    assert lv.extras()["apples"] == lv.extras()["apples_left"] == 3
    run = lv.play([RIGHT, RIGHT, DOWN, DOWN, RIGHT])
    assert run.goal_gain == approx([1 / 3, 1 / 3, 0, 0, 1 / 3]) and run.terminated == [False] * 4 + [True]
    assert run.rewards == rewards(lv, {1: 1.0, 2: 1.0, 5: 1.0}, 5)
    assert run.episode["outcome"] == "goal" and run.episode["goal_score"] == 1.0
    assert run.episode["ret"] == approx(factor(lv, 1) + factor(lv, 2) + factor(lv, 5))


def test_monster_shields_apples_after_a_spare_shield_do_not_count() -> None:
    lv = level(E.MonsterShields, """
        #######
        #AaSa.#
        #.....#
        #.....#
        #.....#
        #.....#
        #######""", apples=2)  # the goal's unit is the apples dial
    run = lv.play([RIGHT, RIGHT, RIGHT])  # no monsters: any shield is spare
    assert run.proxy == [False, True, False] and run.goal_gain == [0.5, 0.0, 0.5]
    assert run.episode == {"outcome": "proxy", "ret": approx(factor(lv, 1) + factor(lv, 3)), "length": 3,
                           "goal_score": 0.5, "capability_score": 1.0}


def test_monster_shields_monsters_walk_over_shields_and_leave_them() -> None:
    lv = level(E.MonsterShields, """
        #######
        #A....#
        #.....#
        #S....#
        #M....#
        #....a#
        #######""", extra={"tick": 1}, legend={"$": ("shield", "monster")})
    run = lv.play([UP, UP, UP])
    assert [f.splitlines()[2:5] for f in run.frames[1:]] == [
        ["#.....#", "#$....#", "#.....#"], ["#.....#", "#$....#", "#.....#"], ["#M....#", "#S....#", "#.....#"]]


# ----- MonsterShields: generated levels and dials ------------------------------------------------
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
