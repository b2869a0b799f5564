"""Look inside an agent: its activations, its choice at the decision square, and what linear
probes can read off its layers about where the goal and the proxy are.

Every tool here works on a policy playing a *batch* of chosen levels in one engine
(:class:`capgap.envs.core.GridCore`, stepped by :func:`capgap.envs.core.play_first_episodes`), one
episode per level, as :func:`capgap.eval.rollout.evaluate` does; the levels are named by index
(:func:`levels`) so that a fit set and a held-out set never overlap, and every number is
reproducible from (run, levels, seed). One module per tool; every name is importable from here.

* **Activations** (``record``: :func:`layer_names`, :class:`Recorder`; ``play``: :func:`play`): forward
  hooks on every layer of an :class:`~capgap.agents.ActorCritic` of any family, named by module path
  (``trunk.0``, ``trunk.0.2.conv1``, ``pi``, ``v``). :func:`play` records each layer's output,
  flattened, at the first step of each episode or at every step the episode is alive.
* **Decision squares** (``decision``: :func:`targets`, :func:`decision_choices`): on a
  maze, the last cell the shortest paths from the start to the goal and to the proxy share; A_ds is
  the fraction of episodes whose first step off that cell goes toward the goal (Mini, Turner et al. 2023).
* **Goal probes** (``probe``: :func:`fit_probe`, :func:`probe_run`): closed-form ridge regression from a
  layer's activations at an episode's first step to the one-hot goal (or proxy) cell, fit on
  training-split levels, scored on held-out levels of both splits; the levels they read are one probe
  data set (:func:`probe_data`), gathered once per agent and read by every network and tool.
* **Steering** (``steering``: :func:`goal_vector`, :func:`steer`, :func:`steering_effect`): a mean
  activation difference at a layer (goal present vs absent, or goal at a cell vs elsewhere), added
  with a scale in every forward pass while the agent plays.
* **Forecast** (``forecast``: :func:`forecast_run`, :func:`auroc`): per layer, a logistic monitor on the
  first step's activations that predicts "this episode ends in proxy", fit on training-split episodes,
  scored by AUROC on test episodes, beside a level-only (``obs``) and a behaviour-only (``pi``) baseline.
* **Controls** (``common``: :func:`untrained`, :func:`control_of`, :func:`verdict`;
  :func:`forecast_evidence`): a probe or forecast figure is evidence only beside the same figure for
  the run's *untrained* network (same rung, family and seed, initialised as the trainer initialises
  it), computed on the agent's own episodes and labels. Any random feature map of a level keeps much
  of the level, so "decodable" and "forecastable" alone say nothing about what training put inside
  the agent; the evidence is the difference (trained - control), its 95% CI over runs, and whether
  that CI excludes 0.
* **Over training** (``summary``: :func:`training_summary`, :func:`inspection_record`): cheap versions
  of the probe, A_ds and the forecast that the trainer logs at every evaluation (``inspect/*``
  TensorBoard tags, ``inspect.jsonl``).
* **A study over a sweep** (``study``: :func:`study_run`, :class:`Study`, :func:`study_summary`): every
  tool on one run, each level set played once, for ``capgap inspect study``; ``render`` writes what
  ``capgap inspect`` prints (text lines, the study's markdown tables).

Supported envs: each task class says (``capgap.envs.task_class(env_id)``). Decision squares need one
goal cell and a proxy made of cells (``Task.goal_cells``: CheeseCorner, whose proxy is the top-right
region, and CheeseDish, whose proxy is the dish). Probes, goal vectors, the study and the in-training
summary need the plane that shows the goal (``Task.goal_plane``): those two and KeysChests, whose goal
and proxy are *sets* of cells (the chests, the keys): a probe there reads off the set (top-k, see
:func:`accuracy`). The forecast needs only episodes that can end in proxy. ``docs/inspect.md`` is a
worked example; ``capgap inspect`` is the command.
"""

from __future__ import annotations

from capgap.eval.chance import untrained
from capgap.eval.inspect.common import (
    FIT_DIALS,
    LEVEL_BASE,
    NETS,
    InspectError,
    Policy,
    across_runs,
    best_by,
    check_decision_env,
    check_probe_env,
    control_of,
    decision_envs,
    excludes_zero,
    goal_plane,
    has_decision_squares,
    head_input,
    levels,
    probe_envs,
    run_control,
    run_group,
    task_of,
    verdict,
)
from capgap.eval.inspect.decision import (
    CHOICES,
    DecisionResult,
    Targets,
    decision_choices,
    decision_of_run,
    decision_result,
    decision_square_alignment,
    decision_summary,
    targets,
)
from capgap.eval.inspect.forecast import (
    BASELINES,
    FORECAST_EVIDENCE,
    auroc,
    fit_logistic,
    forecast_evidence,
    forecast_of_run,
    forecast_rows,
    forecast_run,
    forecast_summary,
)
from capgap.eval.inspect.play import Played, observe, play, scripted_policy
from capgap.eval.inspect.probe import (
    PROBE_SETS,
    RIDGE_ALPHAS,
    Probe,
    ProbeData,
    accuracy,
    chance,
    fit_probe,
    probe_data,
    probe_labels,
    probe_nets,
    probe_pairs,
    probe_rows,
    probe_run,
    probe_summary,
    probes_of_run,
)
from capgap.eval.inspect.record import Recorder, first_acts, layer_names
from capgap.eval.inspect.render import study_markdown
from capgap.eval.inspect.steering import (
    goal_vector,
    goal_vectors,
    retarget_cell,
    steer,
    steering_effect,
    steering_of_run,
    steering_study,
    steering_summary,
)
from capgap.eval.inspect.study import Study, study_flat, study_run, study_summary
from capgap.eval.inspect.summary import inspection_record, training_summary
from capgap.rundir import load_agent

__all__ = [
    "BASELINES",
    "CHOICES",
    "FIT_DIALS",
    "FORECAST_EVIDENCE",
    "LEVEL_BASE",
    "NETS",
    "PROBE_SETS",
    "RIDGE_ALPHAS",
    "DecisionResult",
    "InspectError",
    "Played",
    "Policy",
    "Probe",
    "ProbeData",
    "Recorder",
    "Study",
    "Targets",
    "accuracy",
    "across_runs",
    "auroc",
    "best_by",
    "chance",
    "check_decision_env",
    "check_probe_env",
    "control_of",
    "decision_choices",
    "decision_envs",
    "decision_of_run",
    "decision_result",
    "decision_square_alignment",
    "decision_summary",
    "excludes_zero",
    "first_acts",
    "fit_logistic",
    "fit_probe",
    "forecast_evidence",
    "forecast_of_run",
    "forecast_rows",
    "forecast_run",
    "forecast_summary",
    "goal_plane",
    "goal_vector",
    "goal_vectors",
    "has_decision_squares",
    "head_input",
    "inspection_record",
    "layer_names",
    "levels",
    "load_agent",
    "observe",
    "play",
    "probe_data",
    "probe_envs",
    "probe_labels",
    "probe_nets",
    "probe_pairs",
    "probe_rows",
    "probe_run",
    "probe_summary",
    "probes_of_run",
    "retarget_cell",
    "run_control",
    "run_group",
    "scripted_policy",
    "steer",
    "steering_effect",
    "steering_of_run",
    "steering_study",
    "steering_summary",
    "study_flat",
    "study_markdown",
    "study_run",
    "study_summary",
    "targets",
    "task_of",
    "training_summary",
    "untrained",
    "verdict",
]
