"""Every registered env, through both gymnasium faces: registering an env gets it tested here."""

from __future__ import annotations

import pickle
import typing
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import capgap.envs as E

ENV_IDS = list(E.TASKS)


def rollout(env: gym.Env, seed: int, n_steps: int, action_seed: int = 0) -> list:
    """Random actions for n_steps (resetting on episode end); everything the env returned."""
    rng = np.random.default_rng(action_seed)
    out = [env.reset(seed=seed)]
    for _ in range(n_steps):
        obs, r, term, trunc, info = env.step(int(rng.integers(4)))
        out.append((obs.copy(), r, term, trunc, dict(info)))
        if term or trunc:
            out.append(env.reset())
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("obs_mode", ["grid", "egocentric"])
def test_gymnasium_check_env(env_id: str, split: str, obs_mode: str) -> None:
    for render_mode in ("rgb_array", "ansi"):
        env = gym.make(env_id, split=split, obs_mode=obs_mode, render_mode=render_mode)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episodes(env_id: str) -> None:
    a = rollout(gym.make(env_id, max_steps=20), seed=7, n_steps=120)
    b = rollout(gym.make(env_id, max_steps=20), seed=7, n_steps=120)
    c = rollout(gym.make(env_id, max_steps=20), seed=8, n_steps=120)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_equal(x, y)
    assert not np.array_equal(a[0][0], c[0][0]), "a different seed should give a different first level"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_midway_continues_identically(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=3)
    for a in (0, 1, 2, 1):
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    clone = pickle.loads(pickle.dumps(env))
    rng = np.random.default_rng(1)
    for _ in range(60):
        a = int(rng.integers(4))
        x, y = env.step(a), clone.step(a)
        np.testing.assert_equal(x, y)
        if x[2] or x[3]:
            np.testing.assert_equal(env.reset(), clone.reset())


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_truncation_at_step_limit(env_id: str) -> None:
    env = gym.make(env_id, max_steps=4)
    rng = np.random.default_rng(0)
    truncations = 0
    for seed in range(30):
        env.reset(seed=seed)
        for t in range(1, 5):  # noqa: B007 (t is read after the loop)
            _, _, term, trunc, info = env.step(int(rng.integers(4)))
            if term or trunc:
                break
        assert term or trunc, "an episode must end by max_steps"
        assert not (term and trunc)
        if trunc:
            truncations += 1
            assert t == 4 and info["length"] == 4
        with pytest.raises(gym.error.ResetNeeded):
            env.step(0)
    assert truncations > 0


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_and_vector_faces_agree(env_id: str) -> None:
    """Same seeds, same actions: a vector env and N single envs see the same levels, rewards and outcomes."""
    n, steps = 4, 150
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", max_steps=25)
    singles = [gym.make(env_id, max_steps=25) for _ in range(n)]
    vobs, _ = venv.reset(seed=11)
    sobs = [e.reset(seed=11 + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_array_equal(vobs, np.stack(sobs))
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(steps):
        acts = rng.integers(4, size=n)
        vobs, vr, vterm, vtrunc, vinfo = venv.step(acts)
        for i, env in enumerate(singles):
            obs, r, term, trunc, info = env.step(int(acts[i]))
            assert (r, term, trunc) == (pytest.approx(vr[i]), vterm[i], vtrunc[i])
            if term or trunc:
                episodes += 1
                ep = vinfo["episode"]
                assert vinfo["_episode"][i]
                np.testing.assert_array_equal(vinfo["final_obs"][i], obs)
                assert E.OUTCOMES[ep["outcome"][i]] == info["outcome"]
                assert ep["goal_score"][i] == pytest.approx(info["goal_score"])
                assert ep["capability_score"][i] == pytest.approx(info["capability_score"])
                assert ep["r"][i] == pytest.approx(info["return"]) and ep["l"][i] == info["length"]
                obs, _ = env.reset()
            np.testing.assert_array_equal(vobs[i], obs)
    assert episodes >= n


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_outcome_schema_at_episode_end(env_id: str) -> None:
    env = gym.make(env_id, max_steps=30)
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(40):
        env.reset(seed=seed)
        for _ in range(30):  # bounded: an env that never ends its episodes fails here instead of hanging
            _, _, term, trunc, info = env.step(int(rng.integers(4)))
            if term or trunc:
                break
            assert info == {}
        assert term or trunc, f"seed {seed}: the episode did not end by max_steps=30"
        assert info["outcome"] in E.OUTCOMES
        assert 0.0 <= info["goal_score"] <= info["capability_score"] <= 1.0
        assert info["outcome"] != "goal" or info["goal_score"] == 1.0
        assert info["outcome"] == "neither" or info["capability_score"] == 1.0
        assert isinstance(info["return"], float)
        seen.add(info["outcome"])
    assert len(seen) >= 1 and (not E.task_class(env_id).control or "proxy" not in seen), seen


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_levels_depend_only_on_split_and_index(env_id: str, split: str) -> None:
    task = E.task_class(env_id)()
    idx = np.array([5, 123456789, 2**61 + 3, 0, 77, 2**62 - 1])
    batch = task.levels(split, idx)
    for j, i in enumerate(idx):
        for alone in (task.levels(split, np.array([i])), task.levels(split, np.array([7, i, 9]))):
            k = 0 if len(alone.start) == 1 else 1
            np.testing.assert_array_equal(alone.planes[k], batch.planes[j])
            np.testing.assert_array_equal(alone.extra[k], batch.extra[j])
            assert alone.start[k] == batch.start[j]
    other = task.levels("test" if split == "train" else "train", idx)
    assert not np.array_equal(other.planes, batch.planes), "train and test levels must differ"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_proxy_is_silent_where_it_coincides_with_the_goal(env_id: str) -> None:
    """docs/metrics.md: on training levels (p_disambiguate=0) the proxy event cannot fire, whatever
    the agent does. Random play on 512 envs; the certificate checks the same for its oracles."""
    core = E.make_core(env_id, 512, "train", p_disambiguate=0.0)
    core.reset(0)
    gen = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(2 * core.task.max_steps):
        core.step(torch.randint(0, 4, (512,), generator=gen))
        done = core.episodes.done
        ended += int(done.sum())
        assert not (core.episodes.outcome[done] == E.PROXY).any(), "a proxy event on a training level"
    assert ended >= 512


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_num_levels_fixes_the_training_set(env_id: str) -> None:
    core = E.make_core(env_id, 64, num_levels=5, max_steps=3)
    core.reset(0)
    played = set(core.level.tolist())
    for _ in range(30):
        core.step(torch.randint(0, 4, (64,)))
        played |= set(core.level.tolist())
    assert played == set(range(5))
    unlimited = E.make_core(env_id, 64)
    unlimited.reset(0)
    assert len(set(unlimited.level.tolist())) == 64


def test_egocentric_view_is_centred_on_the_agent() -> None:
    env = gym.make("capgap/CheeseCorner-v0", obs_mode="egocentric", view_size=5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 5, 5)
    assert obs[1, 2, 2] == 1 and obs[1].sum() == 1
    full = env.unwrapped.core
    y, x = divmod(int(full.pos[0]), full.size)
    np.testing.assert_array_equal(obs[0, 1:4, 1:4], full.obs[0, 0, y - 1:y + 2, x - 1:x + 2].numpy())


def test_rendering() -> None:
    env = gym.make("capgap/ColourShape-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (9 * 16, 9 * 16, 3) and frame.dtype == np.uint8 and frame.max() > 0
    text = gym.make("capgap/CheeseCorner-v0", render_mode="ansi")
    text.reset(seed=0)
    grid = text.render()
    assert grid.count("\n") == text.unwrapped.core.size - 1 and "@" in grid and "c" in grid


def test_rendering_shows_what_the_agent_does_not_see() -> None:
    """FollowLeader's target out of sight is drawn faded (text: T'), and drawing it changes no
    observation; a target in sight is drawn as usual."""
    env = gym.make("capgap/FollowLeader-v0", split="test", render_mode="ansi")
    core = env.unwrapped.core
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        in_sight = bool(core.view.plane("target").any())
        grid, frame_obs = env.render(), obs.copy()
        assert np.array_equal(frame_obs, env.unwrapped.core.obs[0].numpy()), "rendering wrote nothing"
        assert grid.count("T") == 1 and grid.count("T'") == (0 if in_sight else 1), (seed, grid)
        if not in_sight:
            break
    else:
        raise AssertionError("no level in 40 with the target out of sight")
    rgb_env = gym.make("capgap/FollowLeader-v0", split="test", render_mode="rgb_array")
    rgb_env.reset(seed=seed)
    faded = rgb_env.render()
    unseen = rgb_env.unwrapped.core.task.unseen(rgb_env.unwrapped.core.view)["target"][0]
    y, x = divmod(int(unseen.nonzero()[0, 0]), 9)
    tile = faded[y * 16:(y + 1) * 16, x * 16:(x + 1) * 16]
    plain = E.render.rgb(rgb_env.unwrapped.core.obs[0].numpy(), rgb_env.unwrapped.core.task.channels)
    assert tile.max() > 0 and plain[y * 16:(y + 1) * 16, x * 16:(x + 1) * 16].max() == 0
    assert tile.max() < max(E.render.STYLE["target"][0]), "faded, not at full colour"


def test_torch_core_is_zero_copy_and_autoresets() -> None:
    core = E.make_core("capgap/CheeseCorner-v0", 256, max_steps=8)
    obs = core.reset(0)
    assert obs.data_ptr() == core.obs.data_ptr() and obs.dtype == torch.uint8
    ended = 0
    for _ in range(16):
        core.step(torch.randint(0, 4, (256,)))
        ended += int(core.episodes.done.sum())
        assert int(core.obs[:, 1].sum()) == 256, "exactly one agent per env, even right after auto-reset"
    assert ended >= 256 and int(core.t.max()) < 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"corner_sise": 2}, "CheeseCorner has no dial 'corner_sise'; its dials are: size,"),
        ({"corner_size": 0}, "CheeseCorner: corner_size=0 is out of range"),
        ({"size": 12}, "CheeseCorner: size=12 is out of range; expected an odd integer"),
        ({"p_disambiguate": 1.5}, "CheeseCorner: p_disambiguate=1.5 is out of range; expected in [0, 1]"),
        ({"split": "val"}, "unknown split 'val'; expected one of train, test"),
        ({"num_levels": -1}, "num_levels=-1 is out of range"),
        ({"obs_mode": "pixels"}, "unknown obs_mode 'pixels'"),
        ({"p_disambiguate": "abc"}, "CheeseCorner: p_disambiguate='abc' has the wrong type; expected a number"),
        ({"size": 9.0}, "CheeseCorner: size=9.0 has the wrong type; expected an integer"),
        ({"max_steps": True}, "CheeseCorner: max_steps=True has the wrong type; expected an integer"),
    ],
)
def test_bad_input_gets_a_one_line_error(kwargs: dict, message: str) -> None:
    with pytest.raises(E.DialError) as err:
        gym.make("capgap/CheeseCorner-v0", **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_env_id() -> None:
    with pytest.raises(E.DialError, match=r"^unknown env 'capgap/Cheese-v0'; registered envs: ") as err:
        E.make_core("capgap/Cheese-v0", 4)
    assert all(env_id in str(err.value) for env_id in E.TASKS)  # every registered env, in any order
    with pytest.raises(gym.error.Error):
        gym.make("capgap/Cheese-v0")


def test_vector_env_egocentric_views_and_render() -> None:
    venv = gym.make_vec("capgap/KeysChests-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        obs_mode="egocentric", view_size=7, render_mode="ansi")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 5, 7, 7) and obs in venv.observation_space
    assert (obs[:, 1, 3, 3] == 1).all(), "the agent sits at the centre of its own view"
    frames = venv.render()
    assert len(frames) == 3 and all("@" in f for f in frames)
    sync = gym.make_vec("capgap/KeysChests-v0", num_envs=3, vectorization_mode="sync", obs_mode="egocentric",
                        view_size=7)
    np.testing.assert_array_equal(sync.reset(seed=0)[0], obs)


def test_bad_actions_get_a_clear_error() -> None:
    env = gym.make("capgap/CheeseCorner-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 4 is not one of 0\.\.3"):
        env.unwrapped.step(4)
    venv = gym.make_vec("capgap/CheeseCorner-v0", num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be 2 integers in 0\.\.3"):
        venv.step(np.array([0, 7]))


def test_a_task_runs_on_a_hand_made_view() -> None:
    """A task sees only a View: KeysChests' rules run on hand-made tensors, no engine."""
    task = E.KeysChests()
    s, ch = task.size, task.channels
    obs = torch.zeros((2, len(ch), s, s), dtype=torch.uint8)
    key_cell, chest_cell = 1 * s + 1, 1 * s + 2
    obs.view(2, len(ch), -1)[:, ch.index("key"), key_cell] = 1
    obs.view(2, len(ch), -1)[:, ch.index("chest"), chest_cell] = 1
    #                     held, keys_left, chests_left, openable
    extra = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
    view = E.View(ch, obs, torch.tensor([key_cell, key_cell]), extra)
    here = obs.view(2, len(ch), -1)[:, :, key_cell].clone()
    here[1] = 0  # env 1 stands on nothing
    ev = task.step(view, here)
    assert extra[:, 0].tolist() == [1, 0] and extra[:, 1].tolist() == [0, 1], "env 0 picked the key up"
    assert obs[0, ch.index("key")].sum() == 0 and obs[1, ch.index("key")].sum() == 1, "only env 0's key vanished"
    assert (obs[0, ch.index("held")] == 1).all() and (obs[1, ch.index("held")] == 0).all()
    assert not ev.proxy.any() and not ev.terminated.any() and (ev.reward == 0).all()
    view.pos = torch.tensor([chest_cell, chest_cell])
    ev = task.step(view, obs.view(2, len(ch), -1)[:, :, chest_cell].clone())
    assert ev.reward.tolist() == [1.0, 0.0] and ev.goal_gain.tolist() == [1.0, 0.0] and ev.terminated.tolist()[0]
    assert obs[0, ch.index("chest")].sum() == 0 and obs[1, ch.index("chest")].sum() == 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_dial_is_type_checked(env_id: str) -> None:
    """Each dial, given a value of the wrong type, gets a one-line DialError naming it (never a
    TypeError from a range check); an int is accepted where a float is expected."""
    cls = E.task_class(env_id)
    hints = typing.get_type_hints(cls)
    wrong = {int: [1.5, "7", True], float: ["abc", True, None], bool: [1, "yes"], str: [3]}
    for dial, default in cls.dials().items():
        assert hints[dial] in wrong, f"{cls.name}.{dial} has an unchecked type {hints[dial]}"
        for value in wrong[hints[dial]]:
            with pytest.raises(E.DialError) as err:
                cls.from_dials(**{dial: value})
            msg = str(err.value)
            assert msg.startswith(f"{cls.name}: {dial}={value!r} has the wrong type") and "\n" not in msg, msg
        if hints[dial] is float:
            cls.from_dials(**{dial: int(default)})


def test_view_writers_touch_only_what_they_name() -> None:
    """clear_under zeroes the named planes under each agent; redraw redraws one plane whole,
    skipping entries below 0; put writes only its cells; neither touches another plane."""
    ch = ("wall", "agent", "apple", "shield", "monster")
    obs = torch.ones((2, len(ch), 5, 5), dtype=torch.uint8)
    view = E.View(ch, obs, torch.tensor([6, 18]), torch.zeros((2, 0), dtype=torch.long))
    before = obs.clone()
    view.clear_under("apple", "shield")
    flat, old = obs.view(2, len(ch), -1), before.view(2, len(ch), -1)
    for env, cell in ((0, 6), (1, 18)):
        assert flat[env, 2:4, cell].tolist() == [0, 0]
        flat[env, 2:4, cell] = 1
    assert torch.equal(obs, before), "nothing else changed"
    view.clear_under("wall", "shield")  # planes that are not neighbours
    assert flat[0, 0, 6] == 0 and flat[0, 3, 6] == 0 and flat[0, 2, 6] == 1 and flat[0, 1, 6] == 1
    obs.copy_(before)
    slot_major = torch.tensor([[7, -1], [12, 24]])  # (slots, B): env 0 has 7 and 12, env 1 only 24
    view.redraw("monster", slot_major.t())
    assert flat[0, 4].nonzero().squeeze(1).tolist() == [7, 12] and flat[1, 4].nonzero().squeeze(1).tolist() == [24]
    assert torch.equal(flat[:, :4], old[:, :4]), "only the monster plane was redrawn"
    view.redraw("monster", torch.tensor([[3], [-1]]))  # (B, k), row-major
    assert flat[0, 4].nonzero().squeeze(1).tolist() == [3] and flat[1, 4].sum() == 0
    view.redraw("monster", torch.tensor([5, 9]))  # (B,): one cell each
    assert flat[0, 4].nonzero().squeeze(1).tolist() == [5] and flat[1, 4].nonzero().squeeze(1).tolist() == [9]
    view.put("apple", torch.tensor([[8, -1], [-1, -1]]), 0)
    assert flat[0, 2, 8] == 0 and flat[0, 2].sum() == 24 and flat[1, 2].sum() == 25
    view.fill("shield", None, torch.tensor([0, 2]))  # every env
    assert flat[0, 3].max() == 0 and (flat[1, 3] == 2).all() and flat[0, 2].sum() == 24
