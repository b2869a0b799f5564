"""PPO on the batched capgap engine, with C(t) and A(t) measured on the shifted split as it trains.

One readable flow, top to bottom, in the manner of CleanRL's ``ppo.py``:
rollout on the torch engine (no numpy in the hot path) -> GAE -> clipped-surrogate updates with
value loss, entropy bonus, advantage normalisation, gradient clipping and LR annealing ->
every ``eval_every`` steps an evaluation on both splits (fresh levels), TensorBoard summaries
and a checkpoint. A killed run resumes from its last checkpoint when launched again. What a run
leaves on disk (config, checkpoints, episode files, the lock) is :mod:`capgap.rundir`' business.

    capgap train --env capgap/CheeseCorner-v0 --rung 3 --seed 0 --total-steps 2_000_000 --out runs/

Every tensor of the flow carries a leading *seed* dimension S: ``train_seeds`` trains several seeds
of one configuration as one batched computation (one engine of S × ``num_envs`` envs, the seeds'
networks stacked into one :class:`~capgap.agents.stack.SeedStack`, one Adam over the stacked
parameters), which is what makes small rungs cheap; a lone run is S = 1. Each seed keeps its own
run dir, init, levels, random stream, gradient clipping and checkpoints (:mod:`capgap.train.seeds`).

TensorBoard tags (x-axis = env steps): ``charts/*`` (training episodes, SPS, LR), ``losses/*``,
``eval/{train,test}/{C,A,proxy,neither,return,length}`` (names: :mod:`capgap.eval.records`),
images ``eval/*/visits`` and ``eval/test/trajectory``; a custom-scalars chart "C vs A" and an
HParams entry in the run dir. With ``Args.inspect`` (``--inspect``) and an env the inspect tools
support, each evaluation also looks inside the network: ``inspect/A_ds``, ``inspect/probe/<layer>``,
``inspect/forecast/<layer>``, ... (:func:`capgap.eval.inspect.training_summary`), also written to
``inspect.jsonl`` for ``capgap report``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from capgap import rundir
from capgap.agents import FAMILIES, ActorCritic, build
from capgap.agents.stack import SeedStack
from capgap.envs import DEFAULT_ENV, OUTCOMES, CapgapError, make_core, parse_dials, task_class
from capgap.eval import chance
from capgap.eval.inspect import PROBE_ENVS, inspection_record, training_summary
from capgap.eval.records import run_meta, split_key, tag
from capgap.eval.rollout import evaluate, heatmap, trajectory
from capgap.rundir import RunError
from capgap.train import seeds
from capgap.train.allocator import keep_freed_memory


@dataclass
class Args:
    """One training run: an env, a ladder rung and a seed."""

    env: str = DEFAULT_ENV
    """Registered env id."""
    rung: str = "small"
    """Network size: the ladder rung, by name (nano micro tiny small base large) or index (0-5)."""
    family: str = "conv"
    """Network family: conv, mlp or impala (see capgap.agents)."""
    seed: int = 0
    """Seed of the network init, the sampling and the training levels."""
    total_steps: int = 0
    """Environment steps to train for (0 = the env's declared budget, listed by ``capgap envs``)."""
    dials: tuple[str, ...] = ()
    """Env dials as name=value, e.g. p_disambiguate=0.1 size=9 (size: the grid side; both splits)."""
    num_levels: int = 0
    """Training levels: 0 = unlimited fresh levels, N = a fixed set of N."""
    init_from: str = ""
    """Start from another run's network (a run dir: its latest checkpoint; or a checkpoint file) with a
    fresh optimizer, e.g. to fine-tune a misgeneralising agent on a few disambiguating levels
    (``--num-levels 10 --dials p_disambiguate=1``). Same env, rung and family; a resumed run
    continues from its own checkpoints. The train split of its evaluations keeps the source run's
    dials (the task it learned first: does the fix cost capability?); the test split uses this run's."""
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
    """Run directory name (default: env__rung__dials__s<seed>)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    device: str = "cpu"
    """torch device."""
    progress: bool = True
    """Show a progress bar."""
    inspect: bool = False
    """At each evaluation, also look inside the network (envs with goal cells: CheeseCorner, CheeseDish,
    KeysChests; elsewhere nothing): goal-probe accuracy per layer on test episodes that end in proxy,
    the "ends in proxy" forecast's AUROC, A_ds, as ``inspect/*`` TensorBoard scalars and lines of
    ``inspect.jsonl`` (capgap.eval.inspect.training_summary). It plays 768 extra episodes per
    evaluation with its own seeded sampler, so training is unchanged, but it adds 5-6% to a run's wall
    time at the default eval_every (measured on CheeseCorner, nano and micro), hence opt-in. ``capgap eval
    DIR --inspect`` computes the same numbers afterwards from a finished run's checkpoints."""


def with_budget(args: Args) -> Args:
    """``args`` with ``total_steps`` 0 replaced by the env's declared budget (``Task.budget``)."""
    if args.total_steps:
        return args
    return dataclasses.replace(args, total_steps=task_class(args.env).budget)  # one line for an unknown env


def check_args(args: Args) -> None:
    """One-line errors (:class:`~capgap.envs.CapgapError`) for settings that cannot run."""
    batch = args.num_envs * args.num_steps
    if args.num_envs < 1 or args.num_steps < 1:
        raise CapgapError(f"num_envs={args.num_envs} and num_steps={args.num_steps} must both be >= 1")
    if batch % args.num_minibatches:
        raise CapgapError(f"the batch (num_envs x num_steps = {batch}) does not split into "
                        f"num_minibatches={args.num_minibatches}; pick a divisor of {batch}")
    if args.total_steps < batch:
        raise CapgapError(f"total_steps={args.total_steps} is less than one rollout "
                        f"(num_envs x num_steps = {batch}); raise total_steps or shrink the batch")
    if args.eval_every < 1 or args.eval_episodes < 1:
        raise CapgapError("eval_every and eval_episodes must be >= 1")
    if args.family not in FAMILIES:
        raise CapgapError(f"unknown network family {args.family!r}; expected one of {', '.join(FAMILIES)}")


def config_of(args: Args) -> dict[str, Any]:
    """``Args`` as plain JSON data (``config.json``, sweep items)."""
    d = dataclasses.asdict(args)
    d["dials"] = list(d["dials"])
    return d


def train(args: Args) -> Path:
    """Train (or resume) one run; returns its directory."""
    return train_seeds([args])[0]


def train_seeds(runs: list[Args]) -> list[Path]:
    """Train (or resume) several seeds of one configuration as one batched computation (one
    engine, one stacked network: :mod:`capgap.train.seeds`), each into its own run dir, exactly
    as lone runs would be laid out; returns their directories. The runs may differ only in
    ``seed``, ``name`` and ``init_from``. Interrupted seeds resume from their latest common
    checkpoint (``seeds.rewind``); seeds with none in common train apart."""
    runs = [with_budget(a) for a in runs]
    for a in runs:
        check_args(a)
    seeds.shared(runs)
    keep_freed_memory()  # reuse freed buffers instead of mapping fresh pages every minibatch
    dials = parse_dials(runs[0].dials)  # the only parse of these runs' dials
    group: list[tuple[seeds.Run, ActorCritic]] = []
    for a in runs:
        torch.manual_seed(a.seed)  # each seed's init, as in a lone run
        net = build(a.env, a.rung, a.family, **dials)  # validates env, rung, dials
        config = config_of(a)
        if a.init_from:  # fine-tuning: start from another run's network (a resumed run then loads its own)
            rundir.load_init(a.init_from, config, net)
        run = seeds.Run(a, config, Path(a.out) / rundir.run_name(config), rundir.split_dials(config))
        rundir.prepare_run_dir(run.run_dir, config)
        group.append((run, net))
    with contextlib.ExitStack() as stack:
        for run, _ in group:
            stack.enter_context(rundir.run_lock(run.run_dir))
        todo = []
        for run, net in group:
            if rundir.is_done(run.run_dir):
                print(f"{run.run_dir} already finished; nothing to do")
            else:
                todo.append((run, net))
        seeds.rewind([run.run_dir for run, _ in todo])
        step = {run.run_dir: seeds.resume_step(run.run_dir) for run, _ in todo}
        todo.sort(key=lambda rn: step[rn[0].run_dir])
        for _, same_step in itertools.groupby(todo, key=lambda rn: step[rn[0].run_dir]):
            part = list(same_step)
            with rundir.disk_guard(part[0][0].run_dir):  # a full disk anywhere (e.g. TensorBoard's writer): one line
                _train([r for r, _ in part], dials, SeedStack([n for _, n in part]).to(runs[0].device))
    return [run.run_dir for run, _ in group]


def _train(runs: list[seeds.Run], dials: dict[str, Any], agent: SeedStack) -> None:
    args = runs[0].args  # what the seeds share
    if args.threads:
        torch.set_num_threads(args.threads)

    # ----- setup: S seeds x N envs each; every buffer is (S, T, N) -----------------------
    device = torch.device(args.device)
    S, N, T = len(runs), args.num_envs, args.num_steps
    params = agent.num_params()
    metas = [run_meta(r.config, dials, params, r.run_dir.name) for r in runs]
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    core = make_core(args.env, S * N, "train", args.num_levels, args.device, **dials)
    core.reset(np.concatenate([r.args.seed * seeds.ENV_STRIDE + np.arange(N) for r in runs]))
    rngs = [torch.Generator(device).manual_seed(r.args.seed) for r in runs]  # each seed's own random stream
    batch = N * T  # per seed
    minibatch = batch // args.num_minibatches
    num_iterations = args.total_steps // batch
    iteration, global_step, next_eval = 0, 0, 0
    resumed = rundir.latest_checkpoint(runs[0].run_dir) is not None
    if resumed:
        iteration, global_step, next_eval = seeds.load_checkpoints(runs, agent, optimizer, core, rngs)
    else:
        for r in runs:
            rundir.discard_unsaved(r.run_dir)
    # events logged after the checkpoint (by the killed process) are purged from TensorBoard's view
    writers = [SummaryWriter(str(r.run_dir), purge_step=global_step + 1 if resumed else None) for r in runs]
    if not resumed:
        for w, r in zip(writers, runs, strict=True):
            log_run_header(w, r.config, params)

    obs_shape = core.obs.shape[1:]
    obs_buf = torch.zeros((S, T, N, *obs_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((S, T, N), dtype=torch.long, device=device)
    logprobs = torch.zeros((S, T, N), device=device)
    rewards = torch.zeros_like(logprobs)
    dones = torch.zeros_like(logprobs)
    values = torch.zeros_like(logprobs)
    rows = torch.arange(S, device=device).unsqueeze(1)  # picks each seed's own minibatch
    outcome_base = torch.arange(S * N, device=device) // N * len(OUTCOMES)  # env -> its seed's outcome counters

    from tqdm import tqdm

    bar = tqdm(total=args.total_steps, initial=global_step, unit="step", unit_scale=True, disable=not args.progress,
               desc=runs[0].run_dir.name if S == 1 else f"{S} seeds of {runs[0].run_dir.name}", dynamic_ncols=True)
    last: list[dict[str, float]] = [{} for _ in runs]
    start_time, train_time, start_step = time.time(), 0.0, global_step

    def evaluate_and_checkpoint() -> None:
        """Evaluate each seed's network on both splits, log it, and checkpoint every seed."""
        for s, r in enumerate(runs):
            last[s] = evaluate_and_log(agent.network(s), r.args, r.eval_dials, writers[s], r.run_dir, global_step,
                                       metas[s], core.task.channels)
            writers[s].flush()  # everything up to this step is on disk before the checkpoint exists
        seeds.save_checkpoints(runs, agent, optimizer, core, rngs, params,
                              {"iteration": iteration, "global_step": global_step, "next_eval": next_eval})
        bar.set_postfix({k: f"{np.mean([m[k] for m in last]):.2f}" for k in HEADLINE})

    if not resumed:  # the untrained policy: t = 0 of the curves
        next_eval = global_step + args.eval_every
        evaluate_and_checkpoint()

    # ----- the training loop ----------------------------------------------------------
    while iteration < num_iterations:
        iteration += 1
        t_iter = time.perf_counter()
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.lr * (1.0 - (iteration - 1.0) / num_iterations)

        ep_n, ep_ret, ep_len = (torch.zeros(S, device=device) for _ in range(3))
        ep_outcomes = torch.zeros(S * len(OUTCOMES), device=device)
        with torch.no_grad():
            for step in range(T):
                obs = core.obs.view(S, N, *obs_shape)
                obs_buf[:, step] = obs
                logits, value = agent(obs)
                logp_all = torch.log_softmax(logits, -1)
                action = torch.stack([torch.multinomial(p.exp(), 1, generator=g).squeeze(1)
                                      for p, g in zip(logp_all, rngs, strict=True)])
                actions[:, step], values[:, step] = action, value
                logprobs[:, step] = logp_all.gather(2, action.unsqueeze(2)).squeeze(2)
                reward, terminated, truncated = core.step(action.view(-1))
                rewards[:, step], dones[:, step] = reward.view(S, N), (terminated | truncated).view(S, N).float()
                e = core.episodes
                if e.done.any():
                    d = e.done.view(S, N).float()
                    ep_n += d.sum(1)
                    ep_ret += (e.ret.view(S, N) * d).sum(1)
                    ep_len += (e.length.view(S, N) * d).sum(1)
                    ep_outcomes += torch.bincount((outcome_base + e.outcome.long())[e.done],
                                                  minlength=S * len(OUTCOMES)).float()
            global_step += batch

            # GAE: dones[:, t] says the episode ended at transition t (no bootstrap past it)
            _, next_value = agent(core.obs.view(S, N, *obs_shape))
            advantages = torch.zeros_like(rewards)
            gae = torch.zeros((S, N), device=device)
            for t in reversed(range(T)):
                nv = next_value if t == T - 1 else values[:, t + 1]
                nonterminal = 1.0 - dones[:, t]
                delta = rewards[:, t] + args.gamma * nv * nonterminal - values[:, t]
                gae = delta + args.gamma * args.gae_lambda * nonterminal * gae
                advantages[:, t] = gae
            returns = advantages + values

        b_obs = obs_buf.view(S, batch, *obs_shape)
        b_actions, b_logprobs = actions.view(S, batch), logprobs.view(S, batch)
        b_adv, b_returns, b_values = advantages.view(S, batch), returns.view(S, batch), values.view(S, batch)
        clipfracs = []
        for _epoch in range(args.update_epochs):
            perm = torch.stack([torch.randperm(batch, generator=g, device=device) for g in rngs])
            for start in range(0, batch, minibatch):
                mb = perm[:, start:start + minibatch]  # (S, minibatch): each seed's own samples
                logits, newvalue = agent(b_obs[rows, mb])
                logp_all = torch.log_softmax(logits, -1)
                newlogprob = logp_all.gather(2, b_actions[rows, mb].unsqueeze(2)).squeeze(2)
                entropy = -(logp_all.exp() * logp_all).sum(-1)
                logratio = newlogprob - b_logprobs[rows, mb]
                ratio = logratio.exp()
                with torch.no_grad():  # per seed, like every loss below: (S,)
                    old_approx_kl = (-logratio).mean(1)
                    approx_kl = ((ratio - 1) - logratio).mean(1)
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean(1))
                mb_adv = b_adv[rows, mb]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean(1, keepdim=True)) / (mb_adv.std(1, keepdim=True) + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean(1)
                mb_values, mb_returns = b_values[rows, mb], b_returns[rows, mb]
                if args.clip_vloss:
                    v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * torch.max((newvalue - mb_returns) ** 2, (v_clipped - mb_returns) ** 2).mean(1)
                else:
                    v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean(1)
                entropy_loss = entropy.mean(1)
                loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.sum().backward()  # the seeds' parameters are disjoint: each gets its own gradient
                agent.clip_grad_norms_(args.max_grad_norm)  # per seed, as clip_grad_norm_ per network
                optimizer.step()

        # ----- logging --------------------------------------------------------------------
        train_time += time.perf_counter() - t_iter
        sps = (global_step - start_step) / max(train_time, 1e-9)  # training only: evaluations excluded
        var_y, var_err = b_returns.var(1), (b_returns - b_values).var(1)
        explained_var = torch.where(var_y == 0, torch.nan, 1 - var_err / var_y)
        clipfrac = torch.stack(clipfracs).mean(0)
        for s, writer in enumerate(writers):
            w = writer.add_scalar
            w("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            w("charts/SPS", sps, global_step)
            if ep_n[s]:
                w("charts/episodic_return", float(ep_ret[s] / ep_n[s]), global_step)
                w("charts/episodic_length", float(ep_len[s] / ep_n[s]), global_step)
                for i, o in enumerate(OUTCOMES):
                    w(f"charts/{o}_rate", float(ep_outcomes[s * len(OUTCOMES) + i] / ep_n[s]), global_step)
            for name, value in (("value_loss", v_loss), ("policy_loss", pg_loss), ("entropy", entropy_loss),
                                ("old_approx_kl", old_approx_kl), ("approx_kl", approx_kl)):
                w(f"losses/{name}", float(value[s].detach()), global_step)
            w("losses/clipfrac", float(clipfrac[s]), global_step)
            w("losses/explained_variance", float(explained_var[s]), global_step)
        bar.update(batch)

        # ----- evaluation and checkpoint ---------------------------------------------------
        if global_step >= next_eval or iteration == num_iterations:
            next_eval = global_step + args.eval_every
            evaluate_and_checkpoint()

    bar.close()
    for s, r in enumerate(runs):
        writers[s].close()
        final = {"global_step": global_step, "parameters": params, "wall_s": time.time() - start_time,
                 "train_sps": (global_step - start_step) / max(train_time, 1e-9), "group_seeds": S, **last[s]}
        rundir.write_json(r.run_dir / "done.json", final)


# ----- what the flow calls ----------------------------------------------------------------

HEADLINE = ("C_test", "A_test", "A_train")
"""The numbers on the progress bar (``done.json`` holds C and A of both splits)."""


def log_run_header(writer: SummaryWriter, config: dict[str, Any], params: int) -> None:
    """A new run's hyperparameter table, custom-scalars chart and HParams entry."""
    rows = "\n".join(f"|{k}|{v}|" for k, v in {**config, "parameters": params}.items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)
    writer.add_custom_scalars({"capgap": {
        "test split: C vs A, beside uniform-random play": ["Multiline", [
            tag("C", "test"), tag("A", "test"), tag("C_random", "test"), tag("A_random", "test")]],
        "train split: C vs A, beside uniform-random play": ["Multiline", [
            tag("C", "train"), tag("A", "train"), tag("A_random", "train")]],
        "proxy rate (train, test), beside uniform-random play": ["Multiline", [
            tag("proxy", "train"), tag("proxy", "test"), tag("proxy_random", "test")]],
        "test split, calibrated: 0 = uniform random, 1 = oracle": ["Multiline", [
            tag("C_hat", "test"), tag("A_hat", "test"), tag("proxy_hat", "test")]],
        **({"inspect: probe, forecast, A_ds (beside the untrained control)": ["Multiline", [
            "inspect/probe/head", "inspect/probe/control_head", "inspect/forecast/best",
            "inspect/forecast/control_best", "inspect/forecast/pi", "inspect/A_ds"]]}
           if config.get("inspect") and config["env"] in PROBE_ENVS else {}),
    }})
    hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    hp["parameters"] = params
    for s in hparams_summary(hp, {tag("C", "test"): 0.0, tag("A", "test"): 0.0, tag("A", "train"): 0.0}):
        writer.file_writer.add_summary(s)


def evaluate_and_log(agent: ActorCritic, args: Args, dials: dict[str, dict[str, Any]], writer: SummaryWriter,
                     run_dir: Path, step: int, meta: dict[str, Any], channels: tuple[str, ...]) -> dict[str, float]:
    """Play ``eval_episodes`` fresh levels of each split with the current policy (its own seeded
    sampler: the training run's random stream is untouched); log the metrics, pictures, ``evals.jsonl``
    line and the episodes file. ``dials[split]``: the env dials of each split's levels. Beside each
    split's C, A and proxy rate it logs the uniform-random policy's (``eval/<split>/C_random``, ...:
    flat lines; the untrained network is the curve's own step 0) and, on the test split, the scores
    calibrated against chance (``eval/test/A_hat``, ...; :mod:`capgap.eval.chance`). Returns the
    headline numbers."""
    agent.eval()
    results, last = [], {}
    for split in ("train", "test"):
        res = evaluate(agent, args.env, split, args.eval_episodes, dials[split], seed=args.seed, device=args.device)
        results.append(res)
        m = res.metrics()
        for k, v in m.items():
            writer.add_scalar(tag(k, split), v, step)
        refs = chance.references(args.env, dials[split])
        for k, v in refs.score("random", split).items():
            writer.add_scalar(tag(f"{k}_random", split), v, step)
        if split == "test":
            calibrated = refs.calibrate({split_key(k, split): m[k] for k in chance.SCORES})
            for k in chance.CALIBRATED:
                value = calibrated[split_key(k, split)]
                if not math.isnan(value):  # NaN: no proxy (the control)
                    writer.add_scalar(tag(k, split), value, step)
        writer.add_image(f"eval/{split}/visits", heatmap(res.visits), step, dataformats="HWC")
        if split == "test":
            writer.add_image("eval/test/trajectory", trajectory(res, channels), step, dataformats="HWC")
        last[split_key("C", split)], last[split_key("A", split)] = m["C"], m["A"]
        rundir.append_line(run_dir / "evals.jsonl", {"step": step, "split": split, **m})
    rundir.write_episodes(run_dir, step, [r for res in results for r in res.records(meta, step)])
    if args.inspect:
        inspect_and_log(agent, args, dials["test"], writer, run_dir, step, meta)  # the run's own dials
    agent.train()
    return last


def inspect_and_log(agent: ActorCritic, args: Args, dials: dict[str, Any], writer: SummaryWriter, run_dir: Path,
                    step: int, meta: dict[str, Any]) -> None:
    """Look inside the current network (:func:`capgap.eval.inspect.training_summary`; nothing for an
    env it does not support): ``inspect/<key>`` scalars, and one ``inspect.jsonl`` line with the run's
    meta and the seconds it took. NaNs (e.g. no episode ended in proxy) are left out of TensorBoard."""
    t0 = time.perf_counter()
    net = agent if args.device == "cpu" else copy.deepcopy(agent).cpu()  # the inspection levels live on the CPU
    summary = training_summary(net, args.env, dials, seed=args.seed)
    if not summary:
        return
    for k, v in summary.items():
        if v == v:  # not NaN
            writer.add_scalar(f"inspect/{k}", v, step)
    rundir.append_line(run_dir / "inspect.jsonl", inspection_record(summary, step, meta, time.perf_counter() - t0))


def agent_from_run(run_dir: Path, checkpoint: Path | None = None) -> tuple[ActorCritic, dict[str, Any]]:
    """The network of a run at a checkpoint (default: its latest), with the run's config."""
    config = rundir.read_config(run_dir)
    agent = build(config["env"], config["rung"], config["family"], **parse_dials(config["dials"]))
    path = checkpoint or rundir.latest_checkpoint(run_dir)
    if path is None:
        raise RunError(f"{run_dir} has no checkpoint yet")
    rundir.load_checkpoint(path, agent)
    return agent.eval(), config
