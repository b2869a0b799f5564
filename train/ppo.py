"""PPO on the batched capgap engine, with C(t) and A(t) measured on the shifted split as it trains.

One readable flow, top to bottom, in the manner of CleanRL's ``ppo.py``:
rollout on the torch engine (no numpy in the hot path) -> GAE -> clipped-surrogate updates with
value loss, entropy bonus, advantage normalisation, gradient clipping and LR annealing ->
every ``eval_every`` steps an evaluation on both splits (fresh levels), TensorBoard summaries
and a checkpoint. A killed run resumes from its last checkpoint when launched again.

    capgap train --env capgap/CheeseCorner-v0 --size 3 --seed 0 --total-steps 2_000_000 --out runs/

TensorBoard tags (x-axis = env steps): ``charts/*`` (training episodes, SPS, LR), ``losses/*``,
``eval/{train,test}/{capability,goal,proxy,return,length}``, images ``eval/*/visits`` and
``eval/test/trajectory``; a custom-scalars chart "C vs A" and an HParams entry in the run dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from capgap.agents import FAMILIES, ActorCritic, build, rung
from capgap.envs import BUDGETS, DEFAULT_ENV, OUTCOMES, DialError, make_core, task_class
from capgap.eval.rollout import EvalResult, evaluate, heatmap, trajectory


class RunError(RuntimeError):
    """A run that cannot start or resume as asked (another run in the out dir, a bad checkpoint)."""


@dataclass
class Args:
    """One training run: an env, a ladder rung and a seed."""

    env: str = DEFAULT_ENV
    """Registered env id."""
    size: str = "small"
    """Ladder rung, by name (nano micro tiny small base large) or index (0-5)."""
    family: str = "conv"
    """Network family: conv or mlp."""
    seed: int = 0
    """Seed of the network init, the sampling and the training levels."""
    total_steps: int = 0
    """Environment steps to train for (0 = the env's declared budget, listed by ``capgap envs``)."""
    dials: tuple[str, ...] = ()
    """Env dials as name=value, e.g. p_disambiguate=0.1 size=9 (both splits, training and evaluation)."""
    num_levels: int = 0
    """Training levels: 0 = unlimited fresh levels, N = a fixed set of N."""
    num_envs: int = 256
    """Parallel envs in the rollout."""
    num_steps: int = 16
    """Steps per env per rollout (batch = num_envs * num_steps)."""
    lr: float = 1e-3
    """Adam learning rate."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 8
    """Minibatches per epoch."""
    update_epochs: int = 4
    """Epochs over each rollout."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient."""
    clip_vloss: bool = True
    """Clip the value loss as in the PPO paper."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    eval_every: int = 250_000
    """Evaluate (both splits), log and checkpoint every this many env steps (and at 0 and the end)."""
    eval_episodes: int = 512
    """Episodes per split per evaluation (one per fresh level)."""
    out: str = "runs"
    """Directory that holds run directories."""
    name: str = ""
    """Run directory name (default: env__size__dials__s<seed>)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    device: str = "cpu"
    """torch device."""
    progress: bool = True
    """Show a progress bar."""
    # fields that do not change what a run computes: may differ when resuming
    RESUMABLE_DIFFERENCES = ("threads", "progress", "out", "device")


def parse_dials(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["size=9", "p_disambiguate=0.1"]`` -> ``{"size": 9, "p_disambiguate": 0.1}``."""
    import ast

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise DialError(f"malformed dial {pair!r}; write it as name=value, e.g. p_disambiguate=0.1")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def canonical_dials(pairs: tuple[str, ...] | list[str]) -> str:
    """``("size=9", "p_disambiguate=0.10")`` -> ``"p_disambiguate=0.1,size=9"``: one spelling per setting."""
    return ",".join(f"{k}={v}" for k, v in sorted(parse_dials(pairs).items()))


def run_meta(args: Args, params: int) -> dict[str, Any]:
    """What identifies a run in per-episode records: the keys the evaluator groups by."""
    r = rung(args.size)
    return {"run": run_name(args), "env": args.env, "size": r.name, "size_index": r.index, "params": params,
            "family": args.family, "dials": canonical_dials(args.dials), "seed": args.seed}


def write_episodes(run_dir: Path, step: int, results: list[EvalResult], meta: dict[str, Any]) -> Path:
    """Store an evaluation's per-episode outcomes as ``episodes/step_<step>.jsonl`` (atomically)."""
    (run_dir / "episodes").mkdir(exist_ok=True)
    path = run_dir / "episodes" / f"step_{step:010d}.jsonl"
    lines = "".join(json.dumps(r) + "\n" for res in results for r in res.records(meta, step))
    _atomic_write(path, lambda p: p.write_text(lines))
    return path


def run_name(args: Args) -> str:
    """``CheeseCorner-v0__tiny__p_disambiguate=0.1__s0``: filterable in TensorBoard."""
    if args.name:
        return args.name
    parts = [args.env.split("/")[-1], rung(args.size).name + ("" if args.family == "conv" else f"-{args.family}")]
    parts += [re.sub(r"[^\w.=-]", "_", d) for d in sorted(args.dials)]
    return "__".join([*parts, f"s{args.seed}"])


def with_budget(args: Args) -> Args:
    """``args`` with ``total_steps`` 0 replaced by the env's declared budget (``capgap.envs.BUDGETS``)."""
    if args.total_steps:
        return args
    task_class(args.env)  # a one-line error for an unknown env
    return dataclasses.replace(args, total_steps=BUDGETS[args.env])


def check_args(args: Args) -> None:
    """One-line errors for settings that cannot run."""
    batch = args.num_envs * args.num_steps
    if args.num_envs < 1 or args.num_steps < 1:
        raise DialError(f"num_envs={args.num_envs} and num_steps={args.num_steps} must both be >= 1")
    if batch % args.num_minibatches:
        raise DialError(f"the batch (num_envs x num_steps = {batch}) does not split into "
                        f"num_minibatches={args.num_minibatches}; pick a divisor of {batch}")
    if args.total_steps < batch:
        raise DialError(f"total_steps={args.total_steps} is less than one rollout "
                        f"(num_envs x num_steps = {batch}); raise total_steps or shrink the batch")
    if args.eval_every < 1 or args.eval_episodes < 1:
        raise DialError("eval_every and eval_episodes must be >= 1")
    if args.family not in FAMILIES:
        raise DialError(f"unknown network family {args.family!r}; expected one of {', '.join(FAMILIES)}")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def config_of(args: Args) -> dict[str, Any]:
    d = dataclasses.asdict(args)
    d["dials"] = list(d["dials"])
    return d


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: Path, agent: nn.Module | None = None) -> dict[str, Any]:
    """Read a checkpoint, with a one-line error for a corrupt or mismatched one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or "agent" not in ckpt:
            raise ValueError("not a capgap checkpoint")
    except Exception as err:  # torch raises many types for a damaged file
        raise RunError(f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err)[:80]}); "
                       "delete it to resume from the previous one") from None
    if agent is not None:
        try:
            agent.load_state_dict(ckpt["agent"])
        except RuntimeError:
            raise RunError(f"checkpoint {path} holds a different network than this run's config "
                           f"({ckpt.get('params', '?')} parameters); was the run dir reused?") from None
    return ckpt


def prepare_run_dir(args: Args) -> Path:
    """Create the run dir, or check that it holds this very run (to resume). Refuses another run's dir."""
    run_dir = Path(args.out) / run_name(args)
    cfg_path = run_dir / "config.json"
    config = config_of(args)
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            raise RunError(f"{cfg_path} is corrupt; delete the run dir {run_dir} to start over") from None
        diff = sorted(k for k in config if k not in Args.RESUMABLE_DIFFERENCES and old.get(k) != config[k])
        if diff:
            raise RunError(f"{run_dir} holds another run (its config differs in: {', '.join(diff)}); "
                           "use another --out or --name, or delete that dir")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a capgap run (no config.json); use another --out or --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(cfg_path, lambda p: p.write_text(json.dumps(config, indent=2)))
    return run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float = 15.0) -> Iterator[None]:
    """Hold an exclusive lock on a run dir: two processes never train the same run at once
    (e.g. a resumed sweep while a killed sweep's worker is still exiting)."""
    import fcntl

    with (run_dir / ".lock").open("w") as f:
        deadline = time.time() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RunError(f"{run_dir} is being trained by another process; wait for it or stop it") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def hparams_markdown(args: Args, params: int) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in {**config_of(args), "parameters": params}.items())
    return "|param|value|\n|-|-|\n" + rows


def log_eval(writer: SummaryWriter, step: int, res: EvalResult, channels: tuple[str, ...]) -> dict[str, float]:
    m = res.metrics()
    for k, v in m.items():
        writer.add_scalar(f"eval/{res.split}/{k}", v, step)
    writer.add_image(f"eval/{res.split}/visits", heatmap(res.visits), step, dataformats="HWC")
    if res.split == "test":
        writer.add_image("eval/test/trajectory", trajectory(res, channels), step, dataformats="HWC")
    return m


def train(args: Args) -> Path:
    """Train (or resume) one run; returns its directory."""
    args = with_budget(args)
    check_args(args)
    torch.manual_seed(args.seed)
    agent = build(args.env, args.size, args.family, **parse_dials(args.dials))  # validates env, size, dials
    run_dir = prepare_run_dir(args)
    with run_lock(run_dir):
        if (run_dir / "done.json").exists():
            print(f"{run_dir} already finished; nothing to do")
        else:
            _train(args, run_dir, latest_checkpoint(run_dir), agent.to(args.device))
    return run_dir


def _train(args: Args, run_dir: Path, resume_from: Path | None, agent: ActorCritic) -> None:
    dials = parse_dials(args.dials)
    if args.threads:
        torch.set_num_threads(args.threads)

    # ----- setup ----------------------------------------------------------------------
    device = torch.device(args.device)
    params = agent.num_params()
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    core = make_core(args.env, args.num_envs, "train", args.num_levels, args.device, **dials)
    core.reset(args.seed * (1 << 20) + np.arange(args.num_envs))
    batch = args.num_envs * args.num_steps
    minibatch = batch // args.num_minibatches
    num_iterations = args.total_steps // batch
    iteration, global_step, next_eval = 0, 0, 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, agent)
        optimizer.load_state_dict(ckpt["optimizer"])
        core = ckpt["core"]
        torch.set_rng_state(ckpt["torch_rng"])
        iteration, global_step, next_eval = ckpt["iteration"], ckpt["global_step"], ckpt["next_eval"]
        evals = run_dir / "evals.jsonl"  # forget evaluations logged after the checkpoint
        kept = [ln for ln in evals.read_text().splitlines() if json.loads(ln)["step"] <= global_step]
        _atomic_write(evals, lambda p: p.write_text("".join(ln + "\n" for ln in kept)))
    # events logged after the checkpoint (by the killed process) are purged from TensorBoard's view
    writer = SummaryWriter(str(run_dir), purge_step=global_step + 1 if resume_from else None)
    if resume_from is None:
        writer.add_text("hyperparameters", hparams_markdown(args, params))
        writer.add_custom_scalars({"capgap": {
            "test split: C vs A": ["Multiline", ["eval/test/capability", "eval/test/goal"]],
            "train split: C vs A": ["Multiline", ["eval/train/capability", "eval/train/goal"]],
            "proxy rate (train, test)": ["Multiline", ["eval/train/proxy", "eval/test/proxy"]],
        }})
        hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config_of(args).items()}
        hp["parameters"] = params
        for s in hparams_summary(hp, {"eval/test/capability": 0.0, "eval/test/goal": 0.0,
                                      "eval/train/goal": 0.0}):
            writer.file_writer.add_summary(s)

    obs_buf = torch.zeros((args.num_steps, *core.obs.shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros_like(logprobs)
    dones = torch.zeros_like(logprobs)
    values = torch.zeros_like(logprobs)

    from tqdm import tqdm

    bar = tqdm(total=args.total_steps, initial=global_step, unit="step", unit_scale=True, disable=not args.progress,
               desc=run_name(args), dynamic_ncols=True)
    last: dict[str, float] = {}
    start_time, train_time, start_step = time.time(), 0.0, global_step

    def evaluate_and_checkpoint() -> None:
        nonlocal next_eval, last
        agent.eval()
        results = []
        for split in ("train", "test"):
            res = evaluate(agent, args.env, split, args.eval_episodes, dials, seed=args.seed, device=args.device)
            results.append(res)
            m = log_eval(writer, global_step, res, core.task.channels)
            last[f"{split[:2]}_C"], last[f"{split[:2]}_A"] = m["capability"], m["goal"]
            with (run_dir / "evals.jsonl").open("a") as f:
                f.write(json.dumps({"step": global_step, "split": split, **m}) + "\n")
        write_episodes(run_dir, global_step, results, run_meta(args, params))
        agent.train()
        next_eval = global_step + args.eval_every
        ckpt = {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "core": core,
                "torch_rng": torch.get_rng_state(), "iteration": iteration, "global_step": global_step,
                "next_eval": next_eval, "params": params, "config": config_of(args)}
        writer.flush()  # everything up to this step is on disk before the checkpoint exists
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        _atomic_write(run_dir / "checkpoints" / f"step_{global_step:010d}.pt", lambda p: torch.save(ckpt, p))
        bar.set_postfix(test_C=f"{last['te_C']:.2f}", test_A=f"{last['te_A']:.2f}", train_A=f"{last['tr_A']:.2f}")

    if resume_from is None:
        evaluate_and_checkpoint()  # the untrained policy: t = 0 of the curves

    # ----- the training loop ----------------------------------------------------------
    while iteration < num_iterations:
        iteration += 1
        t_iter = time.perf_counter()
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.lr * (1.0 - (iteration - 1.0) / num_iterations)

        ep_n = ep_ret = ep_len = 0.0
        ep_outcomes = torch.zeros(len(OUTCOMES), device=device)
        with torch.no_grad():
            for step in range(args.num_steps):
                obs_buf[step] = core.obs
                logits, value = agent(core.obs)
                logp_all = torch.log_softmax(logits, -1)
                action = torch.multinomial(logp_all.exp(), 1).squeeze(1)
                actions[step], values[step] = action, value
                logprobs[step] = logp_all.gather(1, action.unsqueeze(1)).squeeze(1)
                reward, terminated, truncated = core.step(action)
                rewards[step], dones[step] = reward, (terminated | truncated).float()
                e = core.episodes
                if e.done.any():
                    d = e.done
                    ep_n += float(d.sum())
                    ep_ret += float(e.ret[d].sum())
                    ep_len += float(e.length[d].sum())
                    ep_outcomes += torch.bincount(e.outcome[d].long(), minlength=len(OUTCOMES)).float()
            global_step += batch

            # GAE: dones[t] says the episode ended at transition t (no bootstrap past it)
            _, next_value = agent(core.obs)
            advantages = torch.zeros_like(rewards)
            gae = torch.zeros(args.num_envs, device=device)
            for t in reversed(range(args.num_steps)):
                nv = next_value if t == args.num_steps - 1 else values[t + 1]
                nonterminal = 1.0 - dones[t]
                delta = rewards[t] + args.gamma * nv * nonterminal - values[t]
                gae = delta + args.gamma * args.gae_lambda * nonterminal * gae
                advantages[t] = gae
            returns = advantages + values

        b_obs = obs_buf.reshape(batch, *core.obs.shape[1:])
        b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
        b_adv, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        clipfracs = []
        for _epoch in range(args.update_epochs):
            perm = torch.randperm(batch, device=device)
            for start in range(0, batch, minibatch):
                mb = perm[start:start + minibatch]
                logits, newvalue = agent(b_obs[mb])
                logp_all = torch.log_softmax(logits, -1)
                newlogprob = logp_all.gather(1, b_actions[mb].unsqueeze(1)).squeeze(1)
                entropy = -(logp_all.exp() * logp_all).sum(-1)
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                mb_adv = b_adv[mb]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                if args.clip_vloss:
                    v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * torch.max((newvalue - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        # ----- logging --------------------------------------------------------------------
        train_time += time.perf_counter() - t_iter
        var_y = b_returns.var()
        explained_var = float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y)
        sps = (global_step - start_step) / max(train_time, 1e-9)  # training only: evaluations excluded
        w = writer.add_scalar
        w("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        w("charts/SPS", sps, global_step)
        if ep_n:
            w("charts/episodic_return", ep_ret / ep_n, global_step)
            w("charts/episodic_length", ep_len / ep_n, global_step)
            for i, o in enumerate(OUTCOMES):
                w(f"charts/{o}_rate", float(ep_outcomes[i]) / ep_n, global_step)
        w("losses/value_loss", v_loss.item(), global_step)
        w("losses/policy_loss", pg_loss.item(), global_step)
        w("losses/entropy", entropy_loss.item(), global_step)
        w("losses/old_approx_kl", old_approx_kl.item(), global_step)
        w("losses/approx_kl", approx_kl.item(), global_step)
        w("losses/clipfrac", float(np.mean(clipfracs)), global_step)
        w("losses/explained_variance", explained_var, global_step)
        bar.update(batch)

        if global_step >= next_eval or iteration == num_iterations:
            evaluate_and_checkpoint()

    bar.close()
    writer.close()
    final = {"global_step": global_step, "parameters": params, "wall_s": time.time() - start_time,
             "train_sps": (global_step - start_step) / max(train_time, 1e-9), **last}
    _atomic_write(run_dir / "done.json", lambda p: p.write_text(json.dumps(final, indent=2)))


def run_args(run_dir: Path) -> Args:
    """The ``Args`` a run was launched with (its ``config.json``)."""
    config = json.loads((run_dir / "config.json").read_text())
    return Args(**{**config, "dials": tuple(config["dials"])})


def agent_from_run(run_dir: Path, checkpoint: Path | None = None) -> tuple[ActorCritic, dict[str, Any]]:
    """The network of a run at a checkpoint (default: its latest), with the run's config."""
    args = run_args(run_dir)
    config = config_of(args)
    agent = build(args.env, args.size, args.family, **parse_dials(args.dials))
    path = checkpoint or latest_checkpoint(run_dir)
    if path is None:
        raise RunError(f"{run_dir} has no checkpoint yet")
    load_checkpoint(path, agent)
    return agent.eval(), config
