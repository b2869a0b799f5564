"""PPO on the batched capgap engine, with C(t) and A(t) measured on the shifted split as it trains.

One readable flow, top to bottom, in the manner of CleanRL's ``ppo.py``:
rollout on the torch engine (no numpy in the hot path) -> GAE -> clipped-surrogate updates with
value loss, entropy bonus, advantage normalisation, gradient clipping and LR annealing ->
every ``eval_every`` steps an evaluation on both splits (fresh levels), TensorBoard summaries
and a checkpoint. A killed run resumes from its last checkpoint when launched again. With
``--until-learned`` a run stops on reaching competence (``Args.until_learned``), ``total_steps`` its cap.

    capgap train --env capgap/CheeseCorner-v0 --rung 3 --seed 0 --total-steps 2_000_000 --out runs/

Every tensor of the flow carries a leading *seed* dimension S: ``train_seeds`` trains several seeds
of one configuration as one batched computation (one engine of S x ``num_envs`` envs, the seeds'
networks stacked into one :class:`~capgap.agents.stack.SeedStack`, one Adam); a lone run is S = 1.
What each seed keeps for itself (levels, random stream, writer, evaluations, checkpoints) is the
:class:`~capgap.train.seeds.SeedGroup`'s; what a run leaves on disk is :mod:`capgap.rundir`'s;
what it logs is :mod:`capgap.train.logs`'; hooks (:mod:`capgap.train.hooks`, e.g. ``--inspect``)
run after each evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from capgap import rundir
from capgap.agents import FAMILIES
from capgap.envs import DEFAULT_ENV, CapgapError, make_core, parse_dials, task_class
from capgap.train import samplers, seeds
from capgap.train.allocator import keep_freed_memory
from capgap.train.hooks import Hook, default_hooks
from capgap.train.seeds import EpisodeStats


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
    sampler: str = "dr"
    """Training level sampler (capgap.train.samplers): dr (domain randomisation: a fresh level every
    episode), plr (prioritised level replay, Jiang et al. 2021: replay the levels of highest learning
    potential, ``plr_score``), plr-oracle (the same, scored by exact regret: the oracle's return on the
    level minus the agent's). A study setting: reports keep samplers apart."""
    plr_score: str = "pvl"
    """plr's score: pvl (positive value loss: the mean positive GAE advantage) or maxmc (the best return
    seen on the level minus the value estimates)."""
    replay_prob: float = 0.5
    """plr, plr-oracle: the probability that a new episode replays a buffered level (once the buffer is
    half full), instead of a fresh one."""
    buffer_size: int = 4000
    """plr, plr-oracle: the levels each seed's buffer keeps (the highest-scoring ones)."""
    staleness: float = 0.3
    """plr, plr-oracle: the weight ρ of staleness in the replay distribution (1 - ρ: of the score rank)."""
    temperature: float = 0.3
    """plr, plr-oracle: the rank temperature β: a level's score weight is (1 / rank)^(1/β)."""
    robust: bool = True
    """plr, plr-oracle: PLR⊥ (Jiang et al. 2021b): no gradient from fresh levels, which are only played to
    be scored; the policy learns on replayed levels only (the env steps of fresh levels still count)."""
    repair_levels: int = 0
    """The repair mix: with K > 0, each episode plays, with probability ``repair_prob``, one of K fixed
    levels made with ``repair_dials``, and otherwise a level of the run's own distribution. With
    ``init_from``, the repair recipe of k*(N): ``capgap sweep --init-from SWEEP --grid repair_levels=1,10,100``."""
    repair_dials: tuple[str, ...] = ("p_disambiguate=1",)
    """The dials of the repair levels, over the run's (default: goal and proxy apart on every one)."""
    repair_prob: float = 0.5
    """The share of episodes that play a repair level (with ``repair_levels``)."""
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
    until_learned: bool = False
    """Stop on reaching competence: once train A (``eval/train/A``) is >= ``capgap.eval.metrics.LEARNED``
    (0.9) at two consecutive evaluations, train ``after_learned`` more evaluations and stop there.
    ``total_steps`` stays the cap (and defines the LR schedule, so nothing before the stop changes); a run
    that reaches it has not learned. ``done.json`` records ``learned``, ``learned_at`` (steps to learn:
    the first of the two evaluations), ``stopped_at`` -- with or without this flag."""
    after_learned: int = 2
    """With ``until_learned``: evaluations of further training after the crossing (0 = stop at it). The
    agent is evaluated at both points: at the crossing (an evaluation on its curve) and at its final step
    (``done.json``), and a report may read either. Goal misgeneralisation can change as training goes
    on, so by default each curve shows two evaluations past competence (docs/metrics.md)."""
    out: str = "runs"
    """Directory that holds run directories."""
    name: str = ""
    """Run directory name (default: env__rung__dials__s<seed>)."""
    threads: int = 1
    """torch CPU threads (>= 1). The default, 1, is fastest wherever other work shares the CPU: threads
    that wait for a busy core slow a run many-fold (2 cores, one busy: 6.9k env steps/s with 1 thread,
    0.26k with 2; the rung small). On an idle machine more may gain (both cores idle: 7.3k vs 11.4k)."""
    device: str = "cpu"
    """torch device: cpu, or cuda (cuda:N) with a CUDA build of torch and a GPU."""
    progress: bool = True
    """Show a progress bar."""
    inspect: bool = False
    """At each evaluation, also look inside the network: on envs with a goal plane (CheeseCorner,
    CheeseDish, KeysChests) goal-probe accuracy per layer, the "ends in proxy" forecast's AUROC and A_ds
    (``inspect/*``); on every env with a proxy, the runtime monitor's detection and warning time
    (``monitor/*``); as scalars and ``inspect.jsonl`` lines (capgap.train.hooks.InspectionHook). Training
    is unchanged, but it adds about 8-10% to a run's wall time at the default eval_every (inspection 5-6%,
    the monitor 2-4%), hence opt-in. ``capgap eval DIR --inspect`` computes the same numbers afterwards."""



def train(args: Args, hooks: Sequence[Hook] | None = None) -> Path:
    """Train (or resume) one run; returns its directory. ``hooks`` run after each evaluation
    (:mod:`capgap.train.hooks`; None: :func:`~capgap.train.hooks.default_hooks`, per ``args.inspect``)."""
    return train_seeds([args], hooks)[0]


def train_seeds(runs: list[Args], hooks: Sequence[Hook] | None = None) -> list[Path]:
    """Train (or resume) several seeds of one configuration as one batched computation (one
    engine, one stacked network: :mod:`capgap.train.seeds`), each into its own run dir, exactly
    as lone runs would be laid out; returns their directories. The runs may differ only in
    ``seed``, ``name`` and ``init_from``. Interrupted seeds resume from their latest common
    checkpoint (``seeds.rewind``); seeds with none in common train apart."""
    runs = [with_budget(a) for a in runs]
    for a in runs:
        check_args(a)  # one-line errors, before anything is written
    seeds.shared(runs)
    torch.set_num_threads(runs[0].threads)  # before any tensor is made: the init and the engine too
    hooks = default_hooks(runs[0]) if hooks is None else list(hooks)
    keep_freed_memory()  # reuse freed buffers instead of mapping fresh pages every minibatch
    dials = parse_dials(runs[0].dials)  # the only parse of these runs' dials
    group = seeds.prepare(runs, [config_of(a) for a in runs], dials)
    with seeds.claim(group) as parts:  # locked; finished runs skipped; the rest grouped by resume step
        for part in parts:
            with rundir.disk_guard(part[0].run_dir), seeds.SeedGroup(part, dials, hooks) as seed_group:
                _train(seed_group)  # a full disk anywhere (e.g. TensorBoard's writer): one line
    return [run.run_dir for run in group]


def _train(group: seeds.SeedGroup) -> None:
    args = group.args  # what the seeds share
    torch.set_num_threads(args.threads)

    # ----- setup: S seeds x N envs each; every buffer is (S, T, N) -----------------------
    device = torch.device(args.device)
    S, N, T = group.size, args.num_envs, args.num_steps
    agent = group.agent  # the seeds' networks: obs (S, B, ...) -> logits (S, B, A), values (S, B)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    core = make_core(args.env, S * N, "train", args.num_levels, args.device, **group.dials)
    levels = samplers.make(args, core, S)  # which level each episode plays: dr, plr, plr-oracle, a repair mix
    group.reset(core)
    batch = N * T  # per seed
    minibatch = batch // args.num_minibatches
    num_iterations = args.total_steps // batch
    iteration, global_step, next_eval = group.resume(agent, optimizer, core)  # (0, 0, 0) unless resumed

    obs_shape = core.obs.shape[1:]
    obs_buf = torch.zeros((S, T, N, *obs_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((S, T, N), dtype=torch.long, device=device)
    logprobs = torch.zeros((S, T, N), device=device)
    rewards = torch.zeros_like(logprobs)
    dones = torch.zeros_like(logprobs)
    values = torch.zeros_like(logprobs)

    bar = group.progress(global_step)
    start_time, train_time, start_step = time.time(), 0.0, global_step

    def evaluate_and_checkpoint() -> None:
        group.evaluate(agent, global_step, core.task.channels)  # each seed still training: both splits, logs, hooks
        group.checkpoint(agent, optimizer, core, iteration=iteration, global_step=global_step, next_eval=next_eval)
        group.stop_learned(global_step, time.time() - start_time, sps())  # --until-learned: seeds that learned stop

    def sps() -> float:
        return (global_step - start_step) / max(train_time, 1e-9)  # training only: evaluations excluded

    if not group.resumed:  # the untrained policy: t = 0 of the curves
        next_eval = global_step + args.eval_every
        evaluate_and_checkpoint()

    # ----- the training loop (a seed that stopped is still computed, but nothing of it is kept) ---
    while iteration < num_iterations and group.training:
        iteration += 1
        t_iter = time.perf_counter()
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.lr * (1.0 - (iteration - 1.0) / num_iterations)

        episodes = EpisodeStats(S, N, device)
        with torch.no_grad():
            for step in range(T):
                obs = core.obs.view(S, N, *obs_shape)
                obs_buf[:, step] = obs
                logits, value = agent(obs)
                logp_all = torch.log_softmax(logits, -1)
                action = group.sample(logp_all)  # each seed from its own random stream
                actions[:, step], values[:, step] = action, value
                logprobs[:, step] = logp_all.gather(2, action.unsqueeze(2)).squeeze(2)
                reward, terminated, truncated = core.step(action.view(-1))
                rewards[:, step], dones[:, step] = reward.view(S, N), (terminated | truncated).view(S, N).float()
                episodes.add(core.episodes)
                levels.record(step)
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
            levels.update(advantages, values)  # PLR: score the levels whose episodes ended

        b_obs = obs_buf.view(S, batch, *obs_shape)
        b_actions, b_logprobs = actions.view(S, batch), logprobs.view(S, batch)
        b_adv, b_returns, b_values = advantages.view(S, batch), returns.view(S, batch), values.view(S, batch)
        b_weights = levels.weights()  # (S, batch) PLR⊥: 0 on fresh levels' transitions; None: every one counts
        clipfracs = []
        for _epoch in range(args.update_epochs):
            for mb in group.minibatches(batch, minibatch):  # b_x[mb]: each seed's own samples, (S, minibatch)
                mean = seeds.masked_mean(None if b_weights is None else b_weights[mb])  # (S, mb) -> (S,)
                logits, newvalue = agent(b_obs[mb])
                logp_all = torch.log_softmax(logits, -1)
                newlogprob = logp_all.gather(2, b_actions[mb].unsqueeze(2)).squeeze(2)
                entropy = -(logp_all.exp() * logp_all).sum(-1)
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():  # per seed, like every loss below: (S,)
                    old_approx_kl = (-logratio).mean(1)
                    approx_kl = ((ratio - 1) - logratio).mean(1)
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean(1))
                mb_adv = b_adv[mb]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean(1, keepdim=True)) / (mb_adv.std(1, keepdim=True) + 1e-8)
                pg_loss = mean(torch.max(-mb_adv * ratio,
                                         -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)))
                mb_values, mb_returns = b_values[mb], b_returns[mb]
                if args.clip_vloss:
                    v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * mean(torch.max((newvalue - mb_returns) ** 2, (v_clipped - mb_returns) ** 2))
                else:
                    v_loss = 0.5 * mean((newvalue - mb_returns) ** 2)
                entropy_loss = mean(entropy)
                loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.sum().backward()  # the seeds' parameters are disjoint: each gets its own gradient
                agent.clip_grad_norms_(args.max_grad_norm)  # per seed, as clip_grad_norm_ per network
                optimizer.step()

        # ----- logging (each scalar per seed: (S,)) ------------------------------------------
        train_time += time.perf_counter() - t_iter
        var_y, var_err = b_returns.var(1), (b_returns - b_values).var(1)
        explained_var = torch.where(var_y == 0, torch.nan, 1 - var_err / var_y)
        group.log(global_step, {
            "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps(), **episodes.scalars(),
            "losses/value_loss": v_loss, "losses/policy_loss": pg_loss, "losses/entropy": entropy_loss,
            "losses/old_approx_kl": old_approx_kl, "losses/approx_kl": approx_kl,
            "losses/clipfrac": torch.stack(clipfracs).mean(0), "losses/explained_variance": explained_var,
            **levels.scalars()})
        bar.update(batch)

        # ----- evaluation and checkpoint ---------------------------------------------------
        if global_step >= next_eval or iteration == num_iterations:
            next_eval = global_step + args.eval_every
            evaluate_and_checkpoint()

    group.finish(global_step, time.time() - start_time, sps())  # every seed still training: done.json


# ----- what the flow calls ----------------------------------------------------------------


def with_budget(args: Args) -> Args:
    """``args`` with ``total_steps`` 0 replaced by the env's declared budget (``Task.budget``)."""
    if args.total_steps:
        return args
    return dataclasses.replace(args, total_steps=task_class(args.env).budget)  # one line for an unknown env


def check_args(args: Args) -> None:
    """One-line errors (:class:`~capgap.envs.CapgapError`) for settings that cannot run, before
    anything is written (env, rung and dials are checked as the network is built, before too)."""
    batch = args.num_envs * args.num_steps
    if args.num_envs < 1 or args.num_steps < 1:
        raise CapgapError(f"num_envs={args.num_envs} and num_steps={args.num_steps} must both be >= 1")
    if args.num_minibatches < 1 or batch % args.num_minibatches:
        raise CapgapError(f"the batch (num_envs x num_steps = {batch}) does not split into "
                          f"num_minibatches={args.num_minibatches}; pick a divisor of {batch}")
    if args.total_steps < batch:
        raise CapgapError(f"total_steps={args.total_steps} is less than one rollout "
                          f"(num_envs x num_steps = {batch}); raise total_steps or shrink the batch")
    if args.eval_every < 1 or args.eval_episodes < 1 or args.update_epochs < 1:
        raise CapgapError("eval_every, eval_episodes and update_epochs must be >= 1")
    if args.after_learned < 0:
        raise CapgapError(f"--after-learned {args.after_learned}: give the evaluations to train on after "
                          "competence, >= 0 (0 = stop at the crossing)")
    if args.family not in FAMILIES:
        raise CapgapError(f"unknown network family {args.family!r}; expected one of {', '.join(FAMILIES)}")
    if args.seed < 0:
        raise CapgapError(f"--seed {args.seed}: a seed is an integer >= 0")
    if args.num_levels < 0:
        raise CapgapError(f"--num-levels {args.num_levels}: give 0 (unlimited fresh levels) or a count >= 1")
    if not args.lr > 0:
        raise CapgapError(f"--lr {args.lr}: the learning rate must be > 0")
    if not 0 < args.gamma <= 1:
        raise CapgapError(f"--gamma {args.gamma}: the discount must be in (0, 1]")
    if not 0 <= args.gae_lambda <= 1:
        raise CapgapError(f"--gae-lambda {args.gae_lambda}: GAE lambda must be in [0, 1]")
    if not (args.clip_coef > 0 and args.max_grad_norm > 0):
        raise CapgapError("--clip-coef and --max-grad-norm must be > 0")
    if args.threads < 1:
        raise CapgapError(f"--threads {args.threads}: give a thread count >= 1 (1, the default, is fastest when "
                          "other work shares the machine; on an idle one try its number of cores)")
    check_sampler(args)
    check_device(args.device)
    rundir.check_out(args.out)


def check_sampler(args: Args) -> None:
    """One line unless the level-sampler settings make sense together (capgap.train.samplers)."""
    from capgap.train.samplers import PLR_SETTINGS, SAMPLERS, SCORES, repair_task

    if args.sampler not in SAMPLERS:
        raise CapgapError(f"--sampler {args.sampler}: unknown level sampler; expected one of {', '.join(SAMPLERS)}")
    if args.plr_score not in SCORES:
        raise CapgapError(f"--plr-score {args.plr_score}: expected one of {', '.join(SCORES)}")
    if args.sampler == "plr-oracle" and args.plr_score != Args.plr_score:
        raise CapgapError("--plr-score is plr's: plr-oracle scores levels by exact regret")
    changed = [k for k in PLR_SETTINGS if getattr(args, k) != getattr(Args, k)]
    if args.sampler == "dr" and changed:
        raise CapgapError(f"--{changed[0].replace('_', '-')} is a setting of --sampler plr and plr-oracle; "
                          "add --sampler plr (or drop it)")
    if args.sampler != "dr" and args.repair_levels:
        raise CapgapError(f"--sampler {args.sampler} with --repair-levels: both choose the levels; use one "
                          "(the repair mix is a fixed set replayed uniformly)")
    if args.sampler != "dr" and args.init_from and args.num_levels:
        raise CapgapError(f"--sampler {args.sampler} makes no sense for fine-tuning on a fixed set of "
                          f"{args.num_levels} levels: the set is the repair; use --repair-levels for a mix")
    if not 0 <= args.replay_prob <= 1 or not 0 <= args.repair_prob <= 1 or not 0 <= args.staleness <= 1:
        raise CapgapError("--replay-prob, --repair-prob and --staleness are probabilities in [0, 1]")
    if args.buffer_size < 1 or args.repair_levels < 0 or not args.temperature > 0:
        raise CapgapError("--buffer-size must be >= 1, --repair-levels >= 0 and --temperature > 0")
    if args.repair_levels:
        task, repair = task_class(args.env).from_dials(**parse_dials(args.dials)), repair_task(args)
        if (task.size, task.channels) != (repair.size, repair.channels):
            raise CapgapError(f"--repair-dials {' '.join(args.repair_dials)}: repair levels must have the run's "
                              f"grid (size {task.size}); set size with --dials, for both")


def check_device(name: str) -> None:
    """One line unless ``name`` is a torch device this machine has: cpu, or cuda[:N] with a GPU there."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CapgapError(f"--device {name}: unknown device; use cpu, or cuda (cuda:N) on a machine with a GPU") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CapgapError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CapgapError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise CapgapError(f"--device {name}: capgap trains on cpu or cuda")


def config_of(args: Args) -> dict[str, Any]:
    """``Args`` as plain JSON data (``config.json``, sweep items)."""
    d = dataclasses.asdict(args)
    d["dials"], d["repair_dials"] = list(d["dials"]), list(d["repair_dials"])
    return d
