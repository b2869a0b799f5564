"""What training calls at each evaluation, beside the evaluation itself (in the manner of
Stable-Baselines3's ``EvalCallback``): ``train(args, hooks=[...])``.

A hook is any object with ``on_evaluation(agent, step, ctx)``: ``agent`` is the network just
evaluated (a plain :class:`~capgap.agents.ActorCritic`, in eval mode, a copy: changing it changes
nothing in training), ``step`` the env step, ``ctx`` an :class:`EvalContext` (the run's args, its
test-split dials, its TensorBoard writer, run dir and run meta). A hook may also have
``charts(config)``: custom-scalar chart entries (``{title: ["Multiline", [tags]]}``) for the run
header that a new run writes once. In a group of seeds (``train_seeds``) each seed's evaluation
calls every hook with that seed's context.

With ``hooks=None``, ``train`` uses :func:`default_hooks`: the in-training inspection
(:class:`InspectionHook`) when ``args.inspect`` is set.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from capgap import rundir
from capgap.envs import task_class


@dataclass
class EvalContext:
    """What a hook gets to know about the run it is called for."""

    args: Any  # capgap.train.ppo.Args
    dials: dict[str, Any]
    """The env dials of the run's test split (its own dials)."""
    writer: Any  # torch.utils.tensorboard.SummaryWriter
    run_dir: Path
    meta: dict[str, Any]
    """The run's ``RUN_KEYS`` (``capgap.eval.records.run_meta``)."""


@runtime_checkable
class Hook(Protocol):
    def on_evaluation(self, agent: Any, step: int, ctx: EvalContext) -> None:
        """Called after each evaluation (at step 0, every ``eval_every`` steps and at the end)."""


def charts_of(hooks: list[Any], config: dict[str, Any]) -> dict[str, list[Any]]:
    """The custom-scalar chart entries the hooks contribute to a run's header."""
    out: dict[str, list[Any]] = {}
    for hook in hooks:
        if hasattr(hook, "charts"):
            out |= hook.charts(config)
    return out


def inspectable(env_id: str) -> bool:
    """Whether in-training inspection supports ``env_id``: its task names the plane that shows the goal."""
    return task_class(env_id).goal_plane is not None


class InspectionHook:
    """Look inside the network at each evaluation (``--inspect``): ``inspect/<key>`` scalars (envs
    with a goal plane: :func:`capgap.eval.inspect.training_summary`), ``monitor/<key>`` scalars (envs
    with a proxy: the runtime monitor, :func:`capgap.eval.monitor.training_monitor`), and one
    ``inspect.jsonl`` line with both (the monitor's keys prefixed ``monitor/``), the run's meta and
    the seconds it took. It plays with its own seeded samplers, so training is unchanged. NaNs (e.g.
    no episode ended in proxy) are left out of TensorBoard."""

    def charts(self, config: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if inspectable(config["env"]):
            out["inspect: probe, forecast, A_ds (beside the untrained control)"] = ["Multiline", [
                "inspect/probe/head", "inspect/probe/control_head", "inspect/forecast/best",
                "inspect/forecast/control_best", "inspect/forecast/pi", "inspect/A_ds"]]
        if monitored(config["env"]):
            out["monitor: detection at 5% false alarms, A with oversight"] = ["Multiline", [
                "monitor/detect", "monitor/pi_detect", "monitor/anomaly_detect", "monitor/A_oversight",
                "monitor/A_random", "monitor/A_agent"]]
        return out

    def on_evaluation(self, agent: Any, step: int, ctx: EvalContext) -> None:
        args = ctx.args
        if not (inspectable(args.env) or monitored(args.env)):
            return
        t0 = time.perf_counter()
        net = agent if args.device == "cpu" else copy.deepcopy(agent).cpu()  # the inspection levels live on the CPU
        from capgap.eval.monitor import inspection

        summary = inspection(net, args.env, ctx.dials, args.seed)
        if not summary:
            return
        for k, v in summary.items():
            if v == v:  # not NaN
                ctx.writer.add_scalar(k if k.startswith("monitor/") else f"inspect/{k}", v, step)
        from capgap.eval.inspect import inspection_record

        rundir.append_line(ctx.run_dir / "inspect.jsonl",
                           inspection_record(summary, step, ctx.meta, time.perf_counter() - t0))


def monitored(env_id: str) -> bool:
    """Whether the runtime monitor applies to ``env_id``: its episodes can end in proxy (not a control env)."""
    return not task_class(env_id).control


def default_hooks(args: Any) -> list[Any]:
    """The hooks ``train`` uses when given none: the inspection with ``args.inspect``."""
    return [InspectionHook()] if args.inspect else []
