"""Several seeds of one run configuration trained together: the plumbing beside ``ppo.py``'s flow.

``capgap.train.ppo.train_seeds`` trains S seeds of one configuration (same env, rung, dials and
hyperparameters; seeds, and a repair's source run, may differ) in one process: one engine of
S × ``num_envs`` envs, one :class:`~capgap.agents.stack.SeedStack` network, one optimizer.
Everything a *run* owns stays per seed, in the very format of a lone run:

* its run dir, TensorBoard file, evaluations, episode files, ``done.json``;
* its checkpoints: seed s's network, its slice of the Adam moments, its slice of the engine and
  its own random generator (:func:`save_checkpoints`), so a seed resumes alone or in any group,
  and every analysis tool reads it like any other run;
* what it plays: env i of seed s is seeded as in a lone run (``seed * 2**20 + i``), and level
  content depends on nothing else, so a seed meets the same levels grouped or alone;
* its init (built under ``torch.manual_seed(seed)``) and its random stream (a generator of its
  own for action sampling and minibatch order).

What differs from a lone run: floating-point rounding of the batched kernels, so trajectories
diverge after a while like two runs on different machines; the seed's results are the same in
distribution (``tests/test_seeds.py``: after two PPO iterations a grouped seed's network is its
lone run's within 1e-4; ``benchmarks/study_time.py``'s before/after runs compare C and A).
A grouped run's ``wall_s`` is the group's (up to the seed's stop, see below).

Stopping on competence (``--until-learned``, :func:`capgap.eval.metrics.stop_step`): each seed stops
on its own, at the evaluation the rule names for it. It gets its final evaluation, checkpoint and
``done.json`` at that step (:meth:`SeedGroup.stop_learned`), and from then on nothing of it is logged,
evaluated or checkpointed, while the others go on. Its network is still computed in the batch (the
seeds are independent: what it computes changes nothing of the others'); the group ends when every
seed has stopped, or at the cap. A killed group resumes without its stopped seeds (their
``done.json`` exists: :func:`claim` skips them), and each resumed seed recomputes the rule's progress
from its ``evals.jsonl``, trimmed to the checkpoint it resumes from, so it stops where it would have:
a lone run exactly, a group's seeds up to the float rounding above (the resumed group may be smaller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capgap import rundir
from capgap.agents import ActorCritic, build
from capgap.agents.stack import SeedStack
from capgap.envs import OUTCOMES, CapgapError
from capgap.envs.core import GridCore
from capgap.eval.metrics import stop_step
from capgap.eval.records import run_meta, split_key
from capgap.rundir import RunError
from capgap.train import logs
from capgap.train.hooks import EvalContext, charts_of

PER_SEED = ("seed", "name", "init_from")
"""``Args`` fields that may differ between the seeds of a group."""
ENV_STRIDE = 1 << 20
"""Env ``i`` of seed ``s`` is seeded ``s * ENV_STRIDE + i`` (as in a lone run)."""


@dataclass
class Run:
    """One seed of a group: its settings and where it lives."""

    args: Any  # capgap.train.ppo.Args
    config: dict[str, Any]
    run_dir: Path
    eval_dials: dict[str, dict[str, Any]]
    """Env dials of each split's evaluation levels (``rundir.split_dials``)."""
    net: ActorCritic
    """Its network as it starts: initialised under its seed (or loaded from ``init_from``)."""


def prepare(runs: list[Any], configs: list[dict[str, Any]], dials: dict[str, Any]) -> list[Run]:
    """Each run's network (initialised under its own seed, as in a lone run; or ``init_from``'s)
    and run dir: every check first (one-line errors), then the dirs are created."""
    out = []
    for a, config in zip(runs, configs, strict=True):
        torch.manual_seed(a.seed)  # each seed's init, as in a lone run
        net = build(a.env, a.rung, a.family, **dials)  # validates env, rung, dials
        if a.init_from:  # fine-tuning: start from another run's network (a resumed run then loads its own)
            rundir.load_init(a.init_from, config, net)
        run = Run(a, config, Path(a.out) / rundir.run_name(config), rundir.split_dials(config), net)
        rundir.check_run_dir(run.run_dir, config)
        out.append(run)
    for run in out:
        rundir.prepare_run_dir(run.run_dir, run.config)
    return out


@contextlib.contextmanager
def claim(runs: list[Run]) -> Iterator[list[list[Run]]]:
    """Lock every run dir for the duration; yields the unfinished runs, rewound to a common resume
    point (:func:`rewind`) and grouped by the step they resume from (each group trains as one)."""
    with contextlib.ExitStack() as stack:
        for run in runs:
            stack.enter_context(rundir.run_lock(run.run_dir))
        todo = []
        for run in runs:
            if rundir.is_done(run.run_dir):
                print(f"{run.run_dir} already finished; nothing to do")
            else:
                todo.append(run)
        rewind([run.run_dir for run in todo])
        step = {run.run_dir: resume_step(run.run_dir) for run in todo}
        todo.sort(key=lambda run: step[run.run_dir])
        yield [list(part) for _, part in itertools.groupby(todo, key=lambda run: step[run.run_dir])]


def shared(args: Iterable[Any]) -> None:
    """One-line error unless the runs may train as one group: equal in everything but ``PER_SEED``."""
    args = list(args)
    common = [{k: v for k, v in dataclasses.asdict(a).items() if k not in PER_SEED} for a in args]
    for a, c in zip(args[1:], common[1:], strict=True):
        diff = sorted(k for k in c if c[k] != common[0][k])
        if diff:
            raise CapgapError(f"seeds {args[0].seed} and {a.seed} cannot train as one group: they differ in "
                              f"{', '.join(diff)}; train them apart")
    seeds = [a.seed for a in args]
    if len(set(seeds)) != len(seeds):
        raise CapgapError(f"seeds {seeds} repeat; a group trains each seed once")


def resume_step(run_dir: Path) -> int:
    """The step a run resumes from (-1: it starts fresh): a group holds runs at one step."""
    path = rundir.latest_checkpoint(run_dir)
    return -1 if path is None else rundir.checkpoint_step(path)


def rewind(run_dirs: list[Path]) -> None:
    """Bring the seeds of a killed group back to one resume point: the latest step at which every
    one of them has a checkpoint (a kill can fall between the seeds' checkpoint writes). Newer
    checkpoints are removed; the group recomputes them. Without a common step, nothing changes
    (the seeds then train apart, each from its own checkpoint)."""
    steps = [{rundir.checkpoint_step(p) for p in rundir.checkpoints(d)} for d in run_dirs]
    common = set.intersection(*steps) if steps else set()
    if not common:
        return
    last = max(common)
    for d in run_dirs:
        for p in rundir.checkpoints(d):
            if rundir.checkpoint_step(p) > last:
                p.unlink()


# ----- the engine: S x N envs, sliced per seed -------------------------------------------------


def core_slice(state: dict[str, torch.Tensor], s: int, size: int) -> dict[str, torch.Tensor]:
    """Seed ``s``'s share of a group engine's ``state_dict`` (every tensor is env-major)."""
    out = {}
    for k, v in state.items():
        n, rem = divmod(v.shape[0], size)
        assert rem == 0, f"engine state {k} is not env-major: shape {tuple(v.shape)}"
        out[k] = v[s * n:(s + 1) * n].clone()
    return out


def core_join(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The group engine's state from its seeds' shares (inverse of :func:`core_slice`)."""
    return {k: torch.cat([st[k] for st in states]) for k in states[0]}


# ----- the optimizer: Adam's moments are elementwise, so each seed owns a slice ------------------


def optimizer_slice(state: dict[str, Any], s: int) -> dict[str, Any]:
    """Seed ``s``'s share of a stacked Adam ``state_dict``: loadable by Adam over one network."""
    per = {i: {k: (v if k == "step" else v[s]).clone() for k, v in st.items()} for i, st in state["state"].items()}
    return {"state": per, "param_groups": state["param_groups"]}


def optimizer_join(states: list[dict[str, Any]]) -> dict[str, Any]:
    """A stacked Adam ``state_dict`` from its seeds' shares (inverse of :func:`optimizer_slice`)."""
    first = states[0]["state"]
    joined = {i: {k: (v if k == "step" else torch.stack([st["state"][i][k] for st in states]))
                  for k, v in first[i].items()} for i in first}
    return {"state": joined, "param_groups": states[0]["param_groups"]}


# ----- checkpoints: one per seed, each in a lone run's format ---------------------------------


def save_checkpoints(runs: list[Run], agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore,
                     rngs: list[torch.Generator], params: int, counters: dict[str, int],
                     only: Iterable[int] | None = None) -> None:
    """Checkpoint every seed of a group (or the seeds ``only``) into its own run dir, as a lone run
    would: everything it needs to continue exactly, alone or in any group (``counters``: iteration,
    global_step, next_eval)."""
    core_state, opt_state = core.state_dict(), optimizer.state_dict()
    for s in range(len(runs)) if only is None else only:
        r = runs[s]
        rundir.save_checkpoint(r.run_dir, counters["global_step"], {
            "agent": agent.state_of(s), "optimizer": optimizer_slice(opt_state, s),
            "core": core_slice(core_state, s, len(runs)), "torch_rng": rngs[s].get_state(), **counters,
            "params": params, "config": r.config})


def load_checkpoints(runs: list[Run], agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore,
                     rngs: list[torch.Generator]) -> tuple[int, int, int]:
    """Restore a group from its seeds' latest checkpoints (all at one step); returns
    (iteration, global_step, next_eval). Evaluations logged after that step are forgotten."""
    ckpts = []
    for s, r in enumerate(runs):
        path = rundir.latest_checkpoint(r.run_dir)
        assert path is not None, f"{r.run_dir} has no checkpoint to resume from"
        ckpt = rundir.load_checkpoint(path, agent.network(s))  # checks it holds this run's network
        agent.load_state_of(s, ckpt["agent"])
        rngs[s].set_state(ckpt["torch_rng"])
        ckpts.append(ckpt)
    counters = {(c["iteration"], c["global_step"], c["next_eval"]) for c in ckpts}
    if len(counters) != 1:
        raise CapgapError(f"the seeds of {runs[0].run_dir.name} stopped at different points {sorted(counters)}; "
                          "train them apart")
    optimizer.load_state_dict(optimizer_join([c["optimizer"] for c in ckpts]))
    core.load_state_dict(core_join([c["core"] for c in ckpts]))
    iteration, global_step, next_eval = counters.pop()
    for r in runs:
        rundir.trim_evals(r.run_dir, global_step)
    return iteration, global_step, next_eval


# ----- the seed dimension of the training flow ------------------------------------------------


def masked_mean(weights: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-seed mean of a (S, M) minibatch quantity: ``x.mean(1)``, or with (S, M) ``weights`` (PLR⊥'s
    mask of fresh levels) the weighted mean (0 for a seed whose minibatch has no weight)."""
    if weights is None:
        return lambda x: x.mean(1)
    total = weights.sum(1).clamp(min=1.0)
    return lambda x: (x * weights).sum(1) / total


class EpisodeStats:
    """Each seed's training episodes that end during one rollout: count, return, length, outcomes."""

    def __init__(self, seeds: int, envs: int, device: torch.device) -> None:
        self.size = seeds
        self.n, self.ret, self.length = (torch.zeros(seeds, device=device) for _ in range(3))
        self.outcomes = torch.zeros(seeds * len(OUTCOMES), device=device)
        self.base = torch.arange(seeds * envs, device=device) // envs * len(OUTCOMES)  # env -> its seed's counters

    def add(self, e: Any) -> None:
        """Count the episodes that ended at this step (``core.episodes``)."""
        if e.done.any():
            d = e.done.view(self.size, -1).float()
            self.n += d.sum(1)
            self.ret += (e.ret.view(self.size, -1) * d).sum(1)
            self.length += (e.length.view(self.size, -1) * d).sum(1)
            self.outcomes += torch.bincount((self.base + e.outcome.long())[e.done],
                                            minlength=self.size * len(OUTCOMES)).float()

    def scalars(self) -> dict[str, list[float | None]]:
        """``charts/*`` per seed: mean return and length, outcome rates (None: no episode ended)."""
        out: dict[str, list[float | None]] = {"charts/episodic_return": [], "charts/episodic_length": []}
        out |= {f"charts/{o}_rate": [] for o in OUTCOMES}
        for s in range(self.size):
            n = self.n[s]
            out["charts/episodic_return"].append(float(self.ret[s] / n) if n else None)
            out["charts/episodic_length"].append(float(self.length[s] / n) if n else None)
            for i, o in enumerate(OUTCOMES):
                out[f"charts/{o}_rate"].append(float(self.outcomes[s * len(OUTCOMES) + i] / n) if n else None)
        return out


def _steps(n: int) -> str:
    """``1_200_000`` -> ``"1.2M"``, ``57_344`` -> ``"57.3k"``: env steps on the progress bar."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


class SeedGroup:
    """The seed dimension of one training flow: S runs of one configuration (S = 1: a lone run)
    trained as one computation. It holds what each seed keeps for itself: its network (a slice of
    the stacked ``agent``), its levels and random stream, its TensorBoard writer, evaluations and
    checkpoints; ``ppo.py`` calls it where a lone run's code would touch one of them. Use it as a
    context manager: leaving closes the progress bar and writers, and turns Ctrl-C into one line."""

    def __init__(self, runs: list[Run], dials: dict[str, Any], hooks: list[Any]) -> None:
        self.runs, self.dials, self.hooks, self.size = runs, dials, hooks, len(runs)
        self.args = runs[0].args  # what the seeds share
        self.device = torch.device(self.args.device)
        self.agent = SeedStack([r.net for r in runs]).to(self.device)
        self.params = self.agent.num_params()
        self.metas = [run_meta(r.config, dials, self.params, r.run_dir.name) for r in runs]
        self.rngs = [torch.Generator(self.device).manual_seed(r.args.seed) for r in runs]  # each seed's own stream
        self.name = runs[0].run_dir.name if len(runs) == 1 else f"{len(runs)} seeds of {runs[0].run_dir.name}"
        self.writers: list[Any] = []
        self.last: list[dict[str, float]] = [{} for _ in runs]
        self.curves: list[dict[int, float]] = [{} for _ in runs]
        """Each seed's train A by step: the stop rule's input (:func:`capgap.eval.metrics.stop_step`)."""
        self.stopped = [False] * self.size
        """Seeds that have stopped (``done.json`` written): nothing more of them is logged or saved."""
        self.resumed, self.saved, self.bar = False, -1, None
        self.rows = torch.arange(self.size, device=self.device).unsqueeze(1)

    def reset(self, core: GridCore) -> None:
        """Start the engine: env ``i`` of seed ``s`` seeded ``s * ENV_STRIDE + i``, as in a lone run."""
        n = core.num_envs // self.size
        core.reset(np.concatenate([r.args.seed * ENV_STRIDE + np.arange(n) for r in self.runs]))

    def resume(self, agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore) -> tuple[int, int, int]:
        """(iteration, global_step, next_eval): from the seeds' latest checkpoints, or (0, 0, 0) for a
        fresh start (after discarding what a start that died before its first checkpoint logged).
        Opens the TensorBoard writers: a resumed run's purge what the killed process logged after its
        checkpoint; a new run's get its header (hyperparameters, charts, HParams). A resumed seed reads
        its evaluations up to the checkpoint back (the stop rule's progress, its last C and A), and
        stops at once if the rule says so there (killed between its last checkpoint and ``done.json``)."""
        from torch.utils.tensorboard import SummaryWriter

        self.resumed = rundir.latest_checkpoint(self.runs[0].run_dir) is not None
        counters = (0, 0, 0)
        if self.resumed:
            counters = load_checkpoints(self.runs, agent, optimizer, core, self.rngs)
            self.saved = counters[1]
            print(f"{self.name}: resuming from step {self.saved:,}", flush=True)
            for s, r in enumerate(self.runs):  # evals.jsonl is trimmed to the checkpoint (load_checkpoints)
                for ln in rundir.read_evals(r.run_dir):
                    if ln["split"] == "train":
                        self.curves[s][ln["step"]] = ln["A"]
                    if ln["step"] == self.saved:
                        self.last[s] |= {split_key(k, ln["split"]): ln[k] for k in ("C", "A")}
        else:
            for r in self.runs:
                rundir.discard_unsaved(r.run_dir)
        purge = counters[1] + 1 if self.resumed else None  # events after the checkpoint are dropped from view
        self.writers = [SummaryWriter(str(r.run_dir), purge_step=purge) for r in self.runs]
        if not self.resumed:
            for w, r in zip(self.writers, self.runs, strict=True):
                logs.log_run_header(w, r.config, self.params, charts_of(self.hooks, r.config))
        self.stop_learned(counters[1], 0.0, 0.0)
        return counters

    def progress(self, step: int) -> Any:
        """The progress bar (env steps), started at ``step``."""
        from tqdm import tqdm

        self.bar = tqdm(total=self.args.total_steps, initial=step, unit="step", unit_scale=True,
                        disable=not self.args.progress, desc=self.name, dynamic_ncols=True)
        return self.bar

    def sample(self, logp: torch.Tensor) -> torch.Tensor:
        """Actions (S, N) from log-probabilities (S, N, A), each seed's from its own random stream."""
        return torch.stack([torch.multinomial(p.exp(), 1, generator=g).squeeze(1)
                            for p, g in zip(logp, self.rngs, strict=True)])

    def minibatches(self, batch: int, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's minibatches: index ``x[idx]`` of a (S, batch, ...) buffer is each seed's own
        ``size`` samples, drawn in its own shuffled order, (S, size, ...)."""
        perm = torch.stack([torch.randperm(batch, generator=g, device=self.device) for g in self.rngs])
        for start in range(0, batch, size):
            yield self.rows, perm[:, start:start + size]

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        """Each seed's training scalars: a number is every seed's; a (S,) tensor or list, one per seed
        (None: nothing for that seed)."""
        scalars = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in scalars.items()}
        for s, writer in enumerate(self.writers):
            if self.stopped[s]:
                continue
            for name, value in scalars.items():
                v = value[s] if isinstance(value, (list, torch.Tensor)) else value
                if v is not None:
                    writer.add_scalar(name, float(v), step)

    def evaluate(self, agent: SeedStack, step: int, channels: tuple[str, ...]) -> None:
        """Evaluate each seed's network on both splits and log it (:func:`capgap.train.logs.evaluate_and_log`),
        then call the hooks; every seed's events are on disk before its checkpoint exists."""
        if self.bar is not None:
            self.bar.set_description_str(f"{self.name}: evaluating"
                                         + (" the untrained network..." if step == 0 else "..."))
        for s, r in enumerate(self.runs):
            if self.stopped[s]:
                continue
            net = agent.network(s)
            self.last[s] = logs.evaluate_and_log(net, r.args, r.eval_dials, self.writers[s], r.run_dir, step,
                                                 self.metas[s], channels)
            self.curves[s][step] = self.last[s][split_key("A", "train")]
            ctx = EvalContext(r.args, r.eval_dials["test"], self.writers[s], r.run_dir, self.metas[s])
            for hook in self.hooks:
                hook.on_evaluation(net, step, ctx)
            self.writers[s].flush()
        if self.bar is not None:
            self.bar.set_description_str(self.name)
            last = [m for m, stopped in zip(self.last, self.stopped, strict=True) if not stopped]
            postfix = {k: f"{np.mean([m[k] for m in last]):.2f}" for k in logs.HEADLINE}
            if self.args.until_learned and self.size > 1:
                postfix["stopped"] = f"{sum(self.stopped)}/{self.size}"
            self.bar.set_postfix(postfix)

    def checkpoint(self, agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore, **counters: int) -> None:
        """Checkpoint every seed still training (:func:`save_checkpoints`; ``counters``: iteration,
        global_step, next_eval)."""
        only = [s for s in range(self.size) if not self.stopped[s]]
        save_checkpoints(self.runs, agent, optimizer, core, self.rngs, self.params, counters, only)
        self.saved = counters["global_step"]

    @property
    def training(self) -> bool:
        """Whether any seed is still training (without ``--until-learned``: until the cap)."""
        return not all(self.stopped)

    def stop_learned(self, step: int, wall_s: float, train_sps: float) -> None:
        """With ``--until-learned``: stop the seeds whose stop rule (:func:`capgap.eval.metrics.stop_step`)
        names this evaluation (``step``, just evaluated and checkpointed), each with its ``done.json``."""
        if not self.args.until_learned:
            return
        for s in range(self.size):
            if not self.stopped[s] and stop_step(self.curves[s], self.args.after_learned)[1] is not None:
                self.done(s, step, wall_s, train_sps)

    def finish(self, step: int, wall_s: float, train_sps: float) -> None:
        """Close the logs and mark every seed still training finished (``done.json``, written last)."""
        self.close()
        for s in range(self.size):
            if not self.stopped[s]:
                self.done(s, step, wall_s, train_sps)

    def done(self, s: int, step: int, wall_s: float, train_sps: float) -> None:
        """Seed ``s`` has stopped at ``step``: close its writer and write its ``done.json`` (last): its final
        C and A, and its steps to learn by the stop rule (whether or not it stopped on them)."""
        r = self.runs[s]
        self.writers[s].close()
        self.stopped[s] = True
        learned_at, _ = stop_step(self.curves[s], r.args.after_learned)
        final = {"global_step": step, "parameters": self.params, "wall_s": wall_s, "train_sps": train_sps,
                 "group_seeds": self.size, **self.last[s], "until_learned": r.args.until_learned,
                 "learned": learned_at is not None, "learned_at": learned_at, "stopped_at": step}
        rundir.write_json(r.run_dir / "done.json", final)
        if r.args.until_learned and r.args.progress:  # on the bar's line: the seed stopped
            what = (f"learned at {_steps(learned_at)}; stopped at {_steps(step)}" if learned_at is not None
                    else f"not learned by the cap; stopped at {_steps(step)}")
            from tqdm import tqdm

            tqdm.write(f"{self.name}: s{r.args.seed} {what}")  # above the bar, which goes on

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # ends the bar's line: nothing printed next is glued onto it
        for w in self.writers:
            w.close()

    def __enter__(self) -> SeedGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> None:
        self.close()
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            where = (f"resume from its last checkpoint (step {self.saved:,})" if self.saved >= 0
                     else "start it again")
            raise RunError(f"interrupted; {self.name} is resumable: re-run the same command to {where}") from None
