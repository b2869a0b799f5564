"""The ``capgap`` command: one entry point, one subcommand per job.

    capgap envs                       list the registered envs and their dials
    capgap show <env> [--split test]  print a level as text
    capgap certify [<env> ...]        run the oracle validity certificate
    capgap sizes [--env <id>]         the size ladder with exact parameter counts
    capgap train [--env ...] [--size ...] [--seed ...] [--total-steps ...]   one PPO run

Bad input ends in one line on stderr (``capgap: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

from capgap import envs as E
from capgap.train.ppo import RunError, parse_dials


class UsageError(ValueError):
    """A bad command line."""


def cmd_envs(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap envs", description="List the registered envs and their dials.")
    p.parse_args(argv)
    for env_id, cls in E.TASKS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{env_id}{'  (control)' if env_id in E.CONTROL_ENVS else ''}\n  {summary}")
        print(f"  planes: {', '.join(cls.channels)}")
        print("  dials:  " + ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls)))


def cmd_show(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap show", description="Print a level of an env as text.")
    p.add_argument("env", help="registered env id, e.g. capgap/CheeseCorner-v0")
    p.add_argument("--split", default="train", choices=E.SPLITS)
    p.add_argument("--seed", type=int, default=0, help="env seed (picks the level)")
    p.add_argument("--dial", action="append", default=[], metavar="NAME=VALUE", help="set a dial (repeatable)")
    a = p.parse_args(argv)
    core = E.make_core(a.env, 1, split=a.split, autoreset=False, **parse_dials(a.dial))
    core.reset(a.seed)
    from capgap.envs import render

    print(f"{a.env} split={a.split} level={int(core.level[0])}")
    print(render.text(core.obs[0].numpy(), core.task.channels))


def cmd_certify(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap certify", description="Run the oracle validity certificate.")
    p.add_argument("env", nargs="*", help="env ids (default: every registered env)")
    p.add_argument("--levels", type=int, default=500, help="seeded levels per split")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from capgap.envs import oracle

    failed = 0
    for env_id in a.env or list(E.TASKS):
        E.task_class(env_id)
        for c in oracle.certify(env_id, a.levels, a.seed):
            failed += not c.ok
            print(f"{env_id:26s} {c.name:44s} {c.value:6.3f}  want {c.bound:7s} {'ok' if c.ok else 'FAIL'}")
    if failed:
        raise SystemExit(1)


def cmd_sizes(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap sizes", description="Print the size ladder with parameter counts.")
    p.add_argument("--env", default=E.DEFAULT_ENV)
    p.add_argument("--family", default="conv", choices=("conv", "mlp"))
    p.add_argument("--dial", action="append", default=[], metavar="NAME=VALUE", help="set a dial (repeatable)")
    a = p.parse_args(argv)
    from capgap.agents import ladder_table

    print(f"{a.env} ({a.family}; width multiplier m at fixed depth)")
    print(f"{'index':>5}  {'name':6}  {'m':>3}  {'parameters':>12}")
    for i, name, m, n in ladder_table(a.env, a.family, **parse_dials(a.dial)):
        print(f"{i:>5}  {name:6}  {m:>3}  {n:>12,}")


def cmd_train(argv: list[str]) -> None:
    import tyro

    from capgap.train.ppo import Args, train

    args = tyro.cli(Args, args=argv, prog="capgap train", description="Train one PPO run (see capgap.train.ppo).")
    run_dir = train(args)
    print(f"run: {run_dir}\nview: tensorboard --logdir {run_dir.parent}")


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "envs": cmd_envs, "show": cmd_show, "certify": cmd_certify, "sizes": cmd_sizes, "train": cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command = COMMANDS.get(argv[0])
    try:
        if command is None:
            raise UsageError(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}")
        command(argv[1:])
    except (UsageError, E.DialError, RunError) as err:
        print(f"capgap: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
