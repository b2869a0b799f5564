"""Several seeds trained as one batched group (``train_seeds``, ``SeedStack``): each seed's network,
gradient, clipping, optimizer, levels and random stream stay its own, its run dir and checkpoints are
a lone run's, a killed group resumes exactly, and the sweep groups only what gains."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import configs
import numpy as np
import pytest
import torch

from capgap import rundir
from capgap.agents import FAMILIES, build
from capgap.agents.stack import SeedStack
from capgap.envs import CapgapError, make_core
from capgap.rundir import load_agent
from capgap.train import seeds
from capgap.train.ppo import Args, train, train_seeds
from capgap.train.sweep import GROUP_MAX_PARAMS, Sweep, plan

ENV = "capgap/CheeseCorner-v0"
QUICK = configs.QUICK


def nets(family: str, n: int = 3) -> list:
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(build(ENV, "micro", family))
    return out


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped-layers", "vmap"])
@pytest.mark.parametrize("family", FAMILIES)
def test_stack_is_its_networks(family: str, grouped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward, gradient and per-seed clipping of the stack equal those of the separate networks."""
    monkeypatch.setattr(SeedStack, "grouped", grouped)
    separate = nets(family)
    stack = SeedStack(separate)
    obs = torch.randint(0, 2, (3, 16, 3, 9, 9), dtype=torch.uint8)
    logits, value = stack(obs)
    loss = (logits.logsumexp(-1) + value ** 2).mean(1)  # one loss per seed
    loss.sum().backward()
    stack.clip_grad_norms_(0.5)
    for s, net in enumerate(separate):
        lg, v = net(obs[s])
        torch.testing.assert_close(logits[s], lg, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(value[s], v, rtol=1e-5, atol=1e-5)
        (lg.logsumexp(-1) + v ** 2).mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        for name, p in zip(stack.names, stack.stacked, strict=True):
            torch.testing.assert_close(p.grad[s], dict(net.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stack.network(s).state_dict(), net.state_dict())


def test_optimizer_and_engine_slices_round_trip() -> None:
    """A seed's share of the group's Adam and engine state is a lone run's, and joins back."""
    separate = nets("conv", 2)
    stack = SeedStack(separate)
    opt = torch.optim.Adam(stack.parameters(), lr=1e-3)
    logits, value = stack(torch.randint(0, 2, (2, 8, 3, 9, 9), dtype=torch.uint8))
    (logits.sum() + value.sum()).backward()
    opt.step()
    state = opt.state_dict()
    lone = torch.optim.Adam(separate[1].parameters(), lr=1e-3)
    lone.load_state_dict(seeds.optimizer_slice(state, 1))  # loads into one network's Adam
    joined = seeds.optimizer_join([seeds.optimizer_slice(state, s) for s in range(2)])
    torch.testing.assert_close(joined["state"], state["state"])

    n = 4
    group = make_core(ENV, 2 * n)
    group.reset(np.concatenate([s * seeds.ENV_STRIDE + np.arange(n) for s in (5, 6)]))
    alone = make_core(ENV, n)
    alone.reset(6 * seeds.ENV_STRIDE + np.arange(n))  # seed 6 as a lone run seeds it
    rng = np.random.default_rng(0)
    for _ in range(30):  # episodes end and levels advance
        acts = torch.as_tensor(rng.integers(0, 4, 2 * n))
        group.step(acts)
        alone.step(acts[n:])
    torch.testing.assert_close(seeds.core_slice(group.state_dict(), 1, 2), alone.state_dict())
    fresh = make_core(ENV, n)
    fresh.load_state_dict(seeds.core_slice(group.state_dict(), 1, 2))
    torch.testing.assert_close(fresh.obs, alone.obs)
    torch.testing.assert_close(seeds.core_join([seeds.core_slice(group.state_dict(), s, 2) for s in range(2)]),
                               group.state_dict())


def final_params(run_dir: Path) -> torch.Tensor:
    agent, _ = load_agent(run_dir)
    return torch.cat([p.detach().flatten() for p in agent.parameters()])


def test_a_grouped_seed_trains_as_its_lone_run(tmp_path: Path) -> None:
    """Same init, levels and random stream: after two PPO iterations a grouped seed's network is its
    lone run's up to float rounding (per-seed gradients, clipping, advantage normalisation, Adam
    and minibatch order), and far from any other seed's."""
    grouped = train_seeds([Args(**QUICK, seed=s, out=str(tmp_path / "group")) for s in (0, 1, 2)])
    lone = [train(Args(**QUICK, seed=s, out=str(tmp_path / "lone"))) for s in (0, 1, 2)]
    for g, one in zip(grouped, lone, strict=True):
        assert g.name == one.name
        assert (final_params(g) - final_params(one)).abs().max() < 1e-4
    assert (final_params(grouped[0]) - final_params(lone[1])).abs().max() > 1e-2  # the check can fail
    done = json.loads((grouped[1] / "done.json").read_text())
    assert done["group_seeds"] == 3 and done["global_step"] == QUICK["total_steps"]


def test_groups_refuse_runs_that_differ() -> None:
    with pytest.raises(CapgapError, match="differ in lr"):
        seeds.shared([Args(seed=0), Args(seed=1, lr=3e-4)])
    with pytest.raises(CapgapError, match="repeat"):
        seeds.shared([Args(seed=0), Args(seed=0)])


def test_a_killed_group_resumes_to_the_same_result(tmp_path: Path, kill_and_rerun) -> None:
    """Kill a group after its first checkpoint; the rerun resumes every seed and ends where an
    uninterrupted group ends, bit for bit, with nothing logged twice."""
    settings = {**QUICK, "total_steps": 32 * 16 * 6, "eval_every": 32 * 16 * 2}
    straight = train_seeds([Args(**settings, seed=s, out=str(tmp_path / "straight")) for s in (0, 1)])
    script = (f"from capgap.train.ppo import Args, train_seeds; "
              f"train_seeds([Args(**{settings!r}, seed=s, out={str(tmp_path / 'killed')!r}) for s in (0, 1)])")
    kill_and_rerun([sys.executable, "-c", script], tmp_path / "killed" / straight[1].name, 32 * 16 * 2)
    for s in straight:
        resumed = tmp_path / "killed" / s.name
        assert torch.equal(final_params(resumed), final_params(s))
        steps = [json.loads(x)["step"] for x in (resumed / "evals.jsonl").read_text().splitlines()]
        assert steps == [0, 0, 1024, 1024, 2048, 2048, 3072, 3072]  # both splits, nothing twice


def test_seeds_killed_between_their_checkpoints_rewind_together(tmp_path: Path) -> None:
    """A kill between the seeds' checkpoint writes leaves them at different steps: the group rewinds
    to their latest common checkpoint and still ends where an uninterrupted group ends."""
    settings = {**QUICK, "total_steps": 32 * 16 * 6, "eval_every": 32 * 16 * 2}
    straight = train_seeds([Args(**settings, seed=s, out=str(tmp_path / "straight")) for s in (0, 1)])
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    for s in straight:
        (tmp_path / "killed" / s.name / "done.json").unlink()
    ahead, behind = (tmp_path / "killed" / s.name for s in straight)
    for ckpt in rundir.checkpoints(behind)[2:]:  # seed 1 stopped at step 1024, seed 0 ran on to 3072
        ckpt.unlink()
    assert seeds.resume_step(ahead) == 3072 and seeds.resume_step(behind) == 1024
    train_seeds([Args(**settings, seed=s, out=str(tmp_path / "killed")) for s in (0, 1)])
    for s in straight:
        assert torch.equal(final_params(tmp_path / "killed" / s.name), final_params(s))
    steps = [json.loads(x)["step"] for x in (ahead / "evals.jsonl").read_text().splitlines()]
    assert steps == [0, 0, 1024, 1024, 2048, 2048, 3072, 3072]


def test_the_sweep_groups_seeds_of_small_rungs_only(tmp_path: Path) -> None:
    base = Args(total_steps=10**6)
    sweep = Sweep(envs=[ENV], rungs=["nano", "tiny", "small"], seeds=[0, 1, 2], grid={"p_disambiguate": ["0", "0.1"]},
                  base=base, out=tmp_path)
    jobs = plan(sweep.trials())
    sizes = {(job[0].rung, job[0].dials): len(job) for job in jobs}
    assert sizes[("nano", ("p_disambiguate=0",))] == 3 and sizes[("tiny", ("p_disambiguate=0.1",))] == 3
    assert build(ENV, "small").num_params() > GROUP_MAX_PARAMS
    assert all(len(job) == 1 for job in jobs if job[0].rung == "small")
    order = [job[0].rung for job in jobs]
    assert order.index("tiny") < order.index("nano")  # the longest jobs start first
    assert all(len(job) == 1 for job in plan(sweep.trials(), group=False))
