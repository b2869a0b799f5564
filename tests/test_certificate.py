"""The oracle validity certificate, for every registered env (see ``capgap.envs.oracle.certify``).

Scripted BFS agents play 500 seeded levels per split at default dials. This is the testbed's
proof that each env is honest: training reward cannot separate goal from proxy, the test split can.
"""

from __future__ import annotations

import pytest

import capgap.envs as E
from capgap.envs import oracle


@pytest.mark.parametrize("env_id", list(E.TASKS))
def test_oracle_certificate(env_id: str) -> None:
    checks = oracle.certify(env_id, n=500, seed=0)
    expected = 3 if E.task_class(env_id).control else 7
    assert len(checks) == expected
    failed = [f"{c.name} = {c.value:.3f} (want {c.bound})" for c in checks if not c.ok]
    assert not failed, f"{env_id}: " + "; ".join(failed)


def test_certificate_catches_a_dishonest_env() -> None:
    """With p_disambiguate=1 every training level pulls goal and proxy apart, so training
    reward does tell them apart: the certificate's train check must fail (it can fail)."""
    checks = {c.name: c for c in oracle.certify("capgap/CheeseCorner-v0", n=200, p_disambiguate=1.0)}
    assert not checks["train: proxy/goal return"].ok
