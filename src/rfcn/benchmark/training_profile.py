"""Where one training iteration's time goes: a per-stage table.

:func:`profile_iterations` runs real trainer iterations (:class:`rfcn.engine.stage_run.StageRun`,
the code ``rfcn train`` runs) with a clock around each stage of the model, the data loading,
the backward pass and the optimiser step (:func:`stage_ranges`). Nothing in the model knows
about it: the clocks wrap the stages' callables for the duration of the profile only.

Forward time of a stage is the wall time inside it minus the stages nested in it (so "head
losses + OHEM" is what ``_head_losses`` spends outside RoI targets, score maps and pooling).
The backward pass is timed as a whole and split among the stages from a second, profiled run
(``torch.profiler``): every autograd node records the sequence number of the forward operator
that created it, so the time the engine spends in node ``n`` goes to the stage that ran the
forward operator with ``n``'s sequence number (:func:`backward_shares`). The profiler itself
adds several microseconds per operator, which is why it only gives the split.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from rfcn.config import Config
from rfcn.data.build import build_dataset
from rfcn.engine.distributed import resolve_device
from rfcn.engine.stage_run import RunContext, StageRun
from rfcn.engine.stages import set_train_mode, stages_for
from rfcn.engine.trainer import resolve_classes
from rfcn.modeling import rfcn as rfcn_module

PREFIX = "stage: "

# What is wrapped in a range, in display order: an attribute path from the StageRun (methods,
# wrapped on their instances), or a function :mod:`rfcn.modeling.rfcn` imported by name. A path
# the model lacks is skipped: each head has its own stages (R-FCN's score maps and vote, the
# light head's thin maps and PSRoIAlign), and "head (other)" is what a head spends outside them
# (the light head's fc layers, the C4 head's pooling, conv5 and fc layers).
_METHODS = (
    ("model.transform.forward", "transform (resize, normalise, pad)"),
    ("model.backbone.trunk.forward", "backbone conv1-4"),
    ("model.backbone.conv5.forward", "backbone conv5"),
    ("model.rpn.head.forward", "RPN convs"),
    ("model.rpn.anchor_generator.forward", "RPN anchors"),
    ("model.rpn._select_proposals", "RPN proposals (decode, clip, NMS)"),
    ("model.rpn._losses", "RPN targets + losses"),
    ("model.rpn.forward", "RPN (other)"),
    ("model.head.score_maps", "head 1x1 convs (score maps)"),
    ("model.head.thin_maps", "light head separable conv (thin maps)"),
    ("model.head.vote", "PS-RoI pooling + voting"),
    ("model.head.pool", "PS-RoI pooling / PSRoIAlign"),
    ("model.head.forward", "head (other)"),
    ("model._head_losses", "head losses + OHEM"),
    ("model.forward", "model (other)"),
    ("optimizer.zero_grad", "optimizer zero_grad"),
    ("optimizer.step", "optimizer step"),
)
_FUNCTIONS = (("assign_roi_targets", "RoI target assignment"),)
_MISSING = object()
DATA_STAGE = "data loading + decoding"
ACCUMULATE_STAGE = "gradient accumulation"
_NODE_PREFIX = "autograd::engine::evaluate_function: "
BACKWARD = "backward pass"  # the whole of Tensor.backward, split among the stages
STAGES = (
    DATA_STAGE,
    *(name for _, name in _METHODS[:8]),
    _FUNCTIONS[0][1],
    *(name for _, name in _METHODS[8:]),
    ACCUMULATE_STAGE,
)


class StageClock:
    """Wall time per stage (nested stages subtracted), and a profiler range around each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._nested: list[float] = []  # per open stage: seconds of the stages inside it

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._nested.append(0.0)
        start = time.perf_counter()
        try:
            with record_function(PREFIX + name):
                yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] += elapsed - self._nested.pop()
            if self._nested:
                self._nested[-1] += elapsed

    def wrap(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return wrapper

    def lap(self) -> dict[str, float]:
        """Seconds per stage since the previous lap (or since the clock started)."""
        seconds, self.seconds = dict(self.seconds), defaultdict(float)
        return seconds

    def batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        while True:
            with self.stage(DATA_STAGE):
                batch = next(batches)
            yield batch


def _resolve(root: object, path: str) -> tuple[object, str] | None:
    """``(owner, attribute)`` of a method path from ``root``, or None where ``root`` has none."""
    *parents, attribute = path.split(".")
    for parent in parents:
        root = getattr(root, parent, None)
    if not callable(getattr(root, attribute, None)):
        return None
    return root, attribute


@contextlib.contextmanager
def stage_ranges(run: StageRun, clock: StageClock) -> Iterator[None]:
    """Within the block, each stage of ``run``'s iterations is timed by ``clock``.

    Methods are wrapped on their instances (an instance attribute shadows the class's), the
    functions where :mod:`rfcn.modeling.rfcn` imported them, and ``Tensor.backward`` on the
    class; all is restored on exit.
    """
    found = ((_resolve(run, path), name) for path, name in _METHODS)
    targets = [(*owner_attribute, name) for owner_attribute, name in found if owner_attribute]
    targets += [(rfcn_module, attribute, name) for attribute, name in _FUNCTIONS]
    targets.append((torch.Tensor, "backward", BACKWARD))
    batches = run.batches
    saved: list[tuple[object, str, object]] = []
    try:
        run.batches = clock.batches(batches)
        for owner, attribute, name in targets:
            wrapped = clock.wrap(getattr(owner, attribute), name)
            saved.append((owner, attribute, vars(owner).get(attribute, _MISSING)))
            setattr(owner, attribute, wrapped)
        yield
    finally:
        run.batches = batches
        for owner, attribute, previous in reversed(saved):
            if previous is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, previous)


def _stage_of(event: Any) -> str | None:
    """The innermost stage range that holds ``event`` (itself included), or None."""
    while event is not None:
        if event.name.startswith(PREFIX):
            return event.name[len(PREFIX) :]
        event = event.cpu_parent
    return None


def backward_nodes(events: list[Any]) -> list[tuple[str, str, float]]:
    """``(node name, stage, microseconds)`` of every autograd node the backward pass ran.

    Every autograd node records the sequence number of the forward operator that created it;
    operators that create no node see the next number, so the last operator (in time) holding
    a number is its node's creator, and the node belongs to that operator's stage. Nodes of
    no stage (gradient accumulation into the leaves) belong to :data:`ACCUMULATE_STAGE`.
    """
    stage_of_sequence: dict[int, str] = {}
    nodes = []
    for event in sorted(events, key=lambda e: e.time_range.start):
        if event.name.startswith(_NODE_PREFIX):
            nodes.append(event)
        elif event.sequence_nr >= 0:
            stage = _stage_of(event)
            if stage is not None and stage != BACKWARD:
                stage_of_sequence[event.sequence_nr] = stage
    return [
        (
            node.name[len(_NODE_PREFIX) :],
            stage_of_sequence.get(node.sequence_nr, ACCUMULATE_STAGE),
            node.time_range.elapsed_us(),
        )
        for node in nodes
    ]


def backward_shares(events: list[Any]) -> dict[str, float]:
    """Which fraction of the backward pass's node time each forward stage caused."""
    backward_us: dict[str, float] = defaultdict(float)
    for _, stage, microseconds in backward_nodes(events):
        backward_us[stage] += microseconds
    total = sum(backward_us.values()) or 1.0
    return {stage: us / total for stage, us in backward_us.items()}


def timed_iterations(run: StageRun, iterations: int) -> list[float]:
    """Wall ms of each of ``iterations`` trainer iterations."""
    wall = []
    for _ in range(iterations):
        start = time.perf_counter()
        run.step()
        wall.append((time.perf_counter() - start) * 1000.0)
    return wall


def profile_iterations(run: StageRun, warmup: int, iterations: int) -> dict[str, Any]:
    """Warm up, then time ``iterations`` iterations stage by stage, then profile as many.

    Forward stages, data loading, the optimiser and the whole backward pass are timed by wall
    clock without the profiler (which adds about as much time again per operator as the small
    operators take). The profiled iterations only split the backward pass among the stages
    (:func:`backward_shares`). Every time is the median over the iterations (on a shared
    machine a few iterations take several times as long as the rest).

    Returns ``{"iteration_ms", "backward_ms", "stages": {name: {"forward_ms", "backward_ms",
    "total_ms"}}, "rest_ms"}``: medians per iteration of the whole iteration, the backward
    pass and each of :data:`STAGES`; ``rest_ms`` is the median iteration minus the stages
    (the loop's own glue, give or take the spread of the medians).
    """
    set_train_mode(run.model)
    timed_iterations(run, warmup)
    clock = StageClock()
    wall, laps = [], []
    with stage_ranges(run, clock):
        for _ in range(iterations):
            wall += timed_iterations(run, 1)
            laps.append(clock.lap())
    with stage_ranges(run, StageClock()), profile(activities=[ProfilerActivity.CPU]) as profiler:
        timed_iterations(run, iterations)
    shares = backward_shares(list(profiler.events()))

    def median_ms(name: str) -> float:
        return statistics.median(lap.get(name, 0.0) for lap in laps) * 1000.0

    backward_ms = median_ms(BACKWARD)
    stages = {}
    for name in STAGES:
        forward_ms, backward = median_ms(name), backward_ms * shares.get(name, 0.0)
        if forward_ms or backward:
            stages[name] = {
                "forward_ms": forward_ms,
                "backward_ms": backward,
                "total_ms": forward_ms + backward,
            }
    iteration_ms = statistics.median(wall)
    return {
        "iteration_ms": iteration_ms,
        "backward_ms": backward_ms,
        "stages": stages,
        "rest_ms": iteration_ms - sum(stage["total_ms"] for stage in stages.values()),
    }


def training_run(cfg: Config, output_dir: Path) -> StageRun:
    """The first training stage of ``cfg`` on its training data, as ``rfcn train`` builds it
    (nothing is written unless the caller saves)."""
    dataset = build_dataset(cfg.data, train=True)
    cfg = resolve_classes(cfg, dataset.class_names)
    context = RunContext(cfg, dataset, resolve_device(cfg.train.device), output_dir, False)
    return StageRun(context, stages_for(cfg.train.mode)[0], 0, None)


def format_profile(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`profile_iterations`' result: ms per iteration per stage."""
    total = result["iteration_ms"]
    lines = [
        "| stage | forward ms | backward ms | total ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = dict(result["stages"])
    rest = result["rest_ms"]
    rows["rest (loop glue, spread of medians)"] = {
        "forward_ms": rest,
        "backward_ms": 0.0,
        "total_ms": rest,
    }
    for name, times in rows.items():
        lines.append(
            f"| {name} | {times['forward_ms']:.1f} | {times['backward_ms']:.1f} "
            f"| {times['total_ms']:.1f} | {100 * times['total_ms'] / total:.1f}% |"
        )
    lines.append(f"| **iteration** | | {result['backward_ms']:.1f} | **{total:.1f}** | 100% |")
    lines.append("")
    lines.append("medians over the iterations, ms per iteration")
    return "\n".join(lines)
