"""Training stages: approximate joint training, or the paper's 4-step alternating training.

R-FCN shares conv1-conv4 (the backbone's ``trunk``) between the RPN and the head; the RPN works
on conv4, so conv5 is used by the head alone and belongs to it, with the 1x1 reduction and the
position-sensitive convolutions. Parameters fall in three groups by name:

======== ========================================== =====================================
group    parameters                                 used by
======== ========================================== =====================================
shared   ``backbone.trunk.*`` (conv1-conv4)          RPN and head
rpn      ``rpn.*``                                   RPN
head     ``backbone.conv5.*``, ``head.*``             R-FCN head
======== ========================================== =====================================

4-step alternating training (paper §3, following Faster R-CNN §3.2; each step runs
``train.iterations`` iterations with the full lr schedule restarted, so the whole run is four
times as long as an end-to-end one):

1. train the RPN with the shared convs, from the initial weights;
2. train the head with the shared convs, again from the initial weights (the same random
   draw or ImageNet weights as step 1), on proposals from step 1's RPN;
3. start from step 2, freeze the shared convs, train the RPN-specific layers;
4. keep the shared convs (and the RPN) frozen, train the head-specific layers on proposals
   from step 3's RPN. The result is one network whose RPN and head share conv1-conv4.

Parameters the model froze itself (``model.freeze_at``) stay frozen in every stage, and a
BatchNorm layer whose parameters are frozen also keeps its running statistics (it stays in
eval mode while the rest trains), so "frozen" layers really do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

PARAMETER_GROUPS = ("shared", "rpn", "head")

_GROUP_PREFIXES = (
    ("backbone.trunk.", "shared"),
    ("backbone.conv5.", "head"),
    ("head.", "head"),
    ("rpn.", "rpn"),
)


@dataclass(frozen=True)
class Stage:
    """One training run of the model inside a training schedule.

    Attributes:
        name: shown in logs; ``<name>.pt`` holds the stage's final weights in alternating mode.
        train_parts: the losses the model computes (``model.train_parts``).
        trainable: parameter groups (:data:`PARAMETER_GROUPS`) the optimiser updates.
        init_from: earlier stage whose final weights start this one; None: initial weights.
        proposals_from: earlier stage whose RPN gives the RoIs; None: the model's own RPN.
    """

    name: str
    train_parts: tuple[str, ...]
    trainable: tuple[str, ...]
    init_from: str | None = None
    proposals_from: str | None = None


END_TO_END = (Stage("end_to_end", ("rpn", "head"), PARAMETER_GROUPS),)

ALTERNATING = (
    Stage("step1_rpn", ("rpn",), ("shared", "rpn")),
    Stage("step2_rfcn", ("head",), ("shared", "head"), proposals_from="step1_rpn"),
    Stage("step3_rpn", ("rpn",), ("rpn",), init_from="step2_rfcn"),
    Stage("step4_rfcn", ("head",), ("head",), init_from="step3_rpn", proposals_from="step3_rpn"),
)


def stages_for(mode: str) -> tuple[Stage, ...]:
    """The stages of ``train.mode`` ("end_to_end" or "alternating")."""
    return {"end_to_end": END_TO_END, "alternating": ALTERNATING}[mode]


def parameter_group(name: str) -> str:
    """The group (:data:`PARAMETER_GROUPS`) of a parameter from its name in the model."""
    for prefix, group in _GROUP_PREFIXES:
        if name.startswith(prefix):
            return group
    raise ValueError(f"parameter {name!r} belongs to no training group")


def configure_stage(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Set ``model.train_parts`` and freeze every group the stage does not train.

    Returns:
        the parameters the stage trains (those the model did not freeze itself).
    """
    model.train_parts = stage.train_parts
    trainable = []
    for name, parameter in model.named_parameters():
        if parameter_group(name) not in stage.trainable:
            parameter.requires_grad_(False)
        elif parameter.requires_grad:
            trainable.append(parameter)
    return trainable


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers with frozen parameters, which stay in eval
    mode: their running statistics must not drift while their scale and shift are fixed."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
