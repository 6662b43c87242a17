import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from engine_fixtures import LOSS_KEYS, deterministic

from rfcn.config import Config
from rfcn.engine import stage_run, trainer
from rfcn.engine.checkpoint import load_checkpoint, load_model
from rfcn.engine.stage_run import IterationEnd
from rfcn.engine.trainer import train
from rfcn.errors import TrainingDiverged, UserError


def _interrupt_at(iteration: int, seen: dict) -> Callable[[IterationEnd], None]:
    """A callback that keeps the weights of ``iteration``, then presses Ctrl-C."""

    def callback(event: IterationEnd) -> None:
        if event.iteration == iteration:
            seen["weights"] = {k: v.clone() for k, v in event.model.state_dict().items()}
            raise KeyboardInterrupt

    return callback


def test_end_to_end_run_writes_its_folder(make_config: Callable, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="num_classes=20 replaced by the 2 classes"):
        result = train(make_config(model={"num_classes": 20}), tmp_path, progress=False)
    assert result.checkpoint == tmp_path / "model_final.pt"
    assert [entry["iteration"] for entry in result.history] == [1, 2, 3, 4, 5, 6]
    assert all(set(LOSS_KEYS) <= set(entry) for entry in result.history)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == result.history
    # lr: warm-up 0.5 -> 1 over 2 iterations, x0.1 from iteration 4 (0-based) on
    assert [e["lr"] for e in result.history] == pytest.approx(
        [0.005, 0.0075, 0.01, 0.01, 0.001, 0.001]
    )
    _, cfg, class_names = load_model(result.checkpoint)
    assert sorted(class_names) == ["blue", "red"]
    assert cfg.model.num_classes == 2  # from the data, not the config's 20
    assert (tmp_path / "config.yaml").is_file()
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 6


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_continues_exactly(make_config: Callable, tmp_path: Path, optimizer: str) -> None:
    cfg = make_config(train={"optimizer": optimizer})
    with deterministic():
        straight = train(cfg, tmp_path / "straight", progress=False)
        seen: dict = {}
        with pytest.raises(KeyboardInterrupt, match="SIGINT at iteration 3"):
            train(cfg, tmp_path / "resumed", progress=False, callbacks=[_interrupt_at(3, seen)])
        assert load_checkpoint(tmp_path / "resumed" / "last.pt")["iteration"] == 3
        resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert [e["iteration"] for e in resumed.history] == [4, 5, 6]
    for ours, reference in zip(resumed.history, straight.history[3:], strict=True):
        assert {k: ours[k] for k in LOSS_KEYS} == {k: reference[k] for k in LOSS_KEYS}
    final_straight = load_checkpoint(straight.checkpoint)["model"]
    final_resumed = load_checkpoint(resumed.checkpoint)["model"]
    for name, value in final_straight.items():
        assert torch.equal(final_resumed[name], value), name
    logged = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in logged] == [1, 2, 3, 4, 5, 6]


def test_weight_average_is_delivered_and_resumes_exactly(
    make_config: Callable, tmp_path: Path
) -> None:
    """With ``train.ema_decay`` model_final.pt holds the average of the trained weights, the
    same after a Ctrl-C and a resume; last.pt keeps the trained weights to go on from."""
    cfg = make_config(train={"ema_decay": 0.4})
    trained: list[dict[str, torch.Tensor]] = []
    later: list[IterationEnd] = []

    def keep_weights(event: IterationEnd) -> None:
        trained.append({k: v.clone() for k, v in event.model.state_dict().items()})

    with deterministic():
        straight = train(cfg, tmp_path / "straight", progress=False)
        with pytest.raises(KeyboardInterrupt, match="SIGINT at iteration 3"):
            train(cfg, tmp_path / "resumed", progress=False, callbacks=[_interrupt_at(3, {})])
        average = load_checkpoint(tmp_path / "resumed" / "last.pt")["weight_average"]["model"]
        resumed = train(
            cfg, tmp_path / "resumed", resume=True, progress=False, callbacks=[keep_weights]
        )
    for n, weights in enumerate(trained, start=4):
        decay = min(0.4, (1 + n) / (10 + n))
        average = {
            k: decay * v + (1 - decay) * weights[k] if v.is_floating_point() else weights[k]
            for k, v in average.items()
        }
    delivered = load_checkpoint(resumed.checkpoint)["model"]
    for name, value in average.items():
        assert torch.allclose(delivered[name], value, atol=1e-6), name
    for name, value in load_checkpoint(straight.checkpoint)["model"].items():
        assert torch.equal(delivered[name], value), name
    last = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert last["weight_average"]["updates"] == 6
    for name, value in trained[-1].items():
        assert torch.equal(last["model"][name], value), name
    assert not torch.equal(delivered["head.cls_conv.weight"], trained[-1]["head.cls_conv.weight"])

    # A run trained without an average and resumed with one: the average starts from the
    # resumed weights (update 1 of the schedule), not from the random initial ones.
    with deterministic():
        with pytest.raises(KeyboardInterrupt, match="SIGINT at iteration 5"):
            interrupt = _interrupt_at(5, {})
            train(make_config(), tmp_path / "late", progress=False, callbacks=[interrupt])
        average = load_checkpoint(tmp_path / "late" / "last.pt")["model"]
        late = train(cfg, tmp_path / "late", resume=True, progress=False, callbacks=[later.append])
    decay = min(0.4, 2 / 11)
    weights = later[0].model.state_dict()  # iteration 6, the one update after the resume
    for name, value in load_checkpoint(late.checkpoint)["model"].items():
        if value.is_floating_point():
            expected = decay * average[name] + (1 - decay) * weights[name]
            assert torch.allclose(value, expected, atol=1e-6), name


def test_ctrl_c_saves_the_interrupted_state(make_config: Callable, tmp_path: Path) -> None:
    seen: dict = {}
    with pytest.raises(KeyboardInterrupt, match="SIGINT at iteration 2"):
        train(make_config(), tmp_path, progress=False, callbacks=[_interrupt_at(2, seen)])
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 2 and state["stage"] == "end_to_end"
    assert {"optimizer", "scheduler", "rng"} <= set(state)
    for name, value in seen["weights"].items():
        assert torch.equal(state["model"][name], value), name
    assert not (tmp_path / "model_final.pt").exists()


def test_folder_with_a_run_needs_resume(make_config: Callable, tmp_path: Path) -> None:
    cfg = make_config(train={"iterations": 1})
    with pytest.raises(UserError, match="no training state to resume"):
        train(cfg, tmp_path, resume=True, progress=False)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(UserError, match="already holds a training run"):
        train(cfg, tmp_path, progress=False)
    changed = make_config(train={"iterations": 1}, model={"k": 5})
    with pytest.raises(UserError, match=r"different model\.k"):
        train(changed, tmp_path, resume=True, progress=False)
    # SGD's momentum buffers cannot continue as AdamW's moments
    changed = make_config(train={"iterations": 2, "optimizer": "adamw"})
    with pytest.raises(UserError, match=r"different train\.optimizer"):
        train(changed, tmp_path, resume=True, progress=False)


def test_config_errors(make_config: Callable, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fp16 mixed precision needs CUDA"):
        train(make_config(train={"amp": "fp16"}), tmp_path, progress=False)
    wrong_count = make_config(data={"class_names": ["red", "blue"]}, model={"num_classes": 3})
    with pytest.raises(UserError, match=r"data\.class_names lists 2 classes"):
        train(wrong_count, tmp_path, progress=False)


def test_weights_that_cannot_be_had_stop_the_run_before_it_writes(
    make_config: Callable, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = make_config(model={"pretrained": str(tmp_path / "missing.pth")})
    with pytest.raises(UserError, match="pretrained weights file not found"):
        train(cfg, out, progress=False)
    assert not out.exists()


def test_diverged_loss_is_reported(make_config: Callable, tmp_path: Path) -> None:
    cfg = make_config(train={"base_lr": 1e30, "warmup_iters": 0, "iterations": 3})
    with pytest.raises(TrainingDiverged, match="training diverged") as caught:
        train(cfg, tmp_path, progress=False)
    assert 1 <= caught.value.iteration <= 3


@pytest.mark.slow
def test_alternating_training_freezes_the_shared_convs(
    make_config: Callable, tmp_path: Path
) -> None:
    # Trainable BatchNorm: frozen steps must keep its running statistics too.
    cfg: Config = make_config(
        train={"mode": "alternating", "iterations": 2}, model={"frozen_bn": False}
    )
    result = train(cfg, tmp_path, progress=False)
    assert [e["stage"] for e in result.history] == [
        stage for stage in ("step1_rpn", "step2_rfcn", "step3_rpn", "step4_rfcn") for _ in (1, 2)
    ]
    assert [e["iteration"] for e in result.history] == list(range(1, 9))
    assert "loss_cls" not in result.history[0] and "loss_rpn_cls" not in result.history[2]
    steps = {
        name: load_checkpoint(tmp_path / f"{name}.pt")["model"]
        for name in ("step1_rpn", "step2_rfcn", "step3_rpn", "step4_rfcn")
    }
    final = load_checkpoint(result.checkpoint)["model"]

    def same(a: dict, b: dict, prefix: str) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    trunk = "backbone.trunk.6."  # conv4 (res4), trained in steps 1 and 2
    assert not same(steps["step1_rpn"], steps["step2_rfcn"], trunk)  # both train the trunk
    assert same(steps["step2_rfcn"], final, "backbone.trunk.")  # frozen in steps 3 and 4
    assert not same(steps["step2_rfcn"], steps["step3_rpn"], "rpn.")
    assert same(steps["step3_rpn"], final, "rpn.")  # step 4 keeps step 3's RPN
    assert same(steps["step2_rfcn"], steps["step3_rpn"], "head.")  # step 3 trains the RPN only
    assert not same(steps["step3_rpn"], final, "head.")
    assert steps["step4_rfcn"].keys() == final.keys()


DEFORMABLE = {"deformable_psroi": True, "deformable_conv5": "v1", "deformable_conv5_groups": 2}


@pytest.mark.slow
def test_alternating_training_of_a_deformable_model(make_config: Callable, tmp_path: Path) -> None:
    """The offset convs (conv5's and the head's) train with the head, in steps 2 and 4."""
    cfg = make_config(train={"mode": "alternating", "iterations": 1}, model=DEFORMABLE)
    result = train(cfg, tmp_path, progress=False)
    steps = [
        load_checkpoint(tmp_path / f"{name}.pt")["model"]
        for name in ("step1_rpn", "step2_rfcn", "step3_rpn", "step4_rfcn")
    ]
    offsets = [k for k in steps[0] if "offset_conv" in k]
    assert len(offsets) == 2 * (2 + 4)
    assert all(not steps[0][k].any() for k in offsets)  # zero-initialised, untouched by step 1
    assert all(steps[1][k].any() for k in offsets if k.endswith("weight"))
    assert all(torch.equal(steps[1][k], steps[2][k]) for k in offsets)  # step 3: RPN only
    assert any(not torch.equal(steps[2][k], steps[3][k]) for k in offsets)
    model, _, _ = load_model(result.checkpoint)
    assert len(model.offset_parameters()) == len(offsets)


def test_offset_lr_factor_scales_the_offset_convs(make_config: Callable, tmp_path: Path) -> None:
    cfg = make_config(
        train={"iterations": 2, "offset_lr_factor": 0.0},
        model={"deformable_psroi": True},
    )
    final = load_checkpoint(train(cfg, tmp_path, progress=False).checkpoint)["model"]
    assert not final["head.cls_offset_conv.weight"].any()  # lr 0: still the zero init
    assert final["head.cls_conv.bias"].any()


@pytest.mark.parametrize(
    ("amp", "native_bf16", "expected"),
    [
        ("auto", True, torch.bfloat16),
        ("auto", False, None),
        ("bf16", False, torch.bfloat16),
        ("none", True, None),
        ("fp16", True, torch.float16),
    ],
)
def test_autocast_dtype(
    amp: str, native_bf16: bool, expected: torch.dtype | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage_run, "bf16_is_fast", lambda device: native_bf16)
    assert stage_run.autocast_dtype(amp, torch.device("cpu")) is expected


@pytest.mark.parametrize(
    ("memory_format", "autocast", "expected"),
    [
        ("auto", torch.bfloat16, torch.channels_last),
        ("auto", None, torch.contiguous_format),
        ("auto", torch.float16, torch.contiguous_format),
        ("channels_last", None, torch.channels_last),
        ("contiguous", torch.bfloat16, torch.contiguous_format),
    ],
)
def test_training_memory_format(
    memory_format: str, autocast: torch.dtype | None, expected: torch.memory_format
) -> None:
    assert stage_run.training_memory_format(memory_format, autocast) is expected


def test_bf16_training_on_the_cpu(
    make_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train.amp=bf16`` runs the convolutions of a CPU training step in bf16 (warning where
    the CPU emulates it) and in channels_last (``train.memory_format=auto``), and saves the
    weights in float32, contiguous."""
    conv_dtypes: list[torch.dtype] = []
    weights_channels_last: list[bool] = []
    grads_as_weights: list[bool] = []

    def watch_the_head(event: IterationEnd) -> None:
        if event.iteration == 1:
            event.model.head.cls_conv.register_forward_hook(
                lambda module, inputs, output: conv_dtypes.append(output.dtype)
            )
            weight = event.model.backbone.trunk[0].weight
            weights_channels_last.append(weight.is_contiguous(memory_format=torch.channels_last))
            # The fused SGD step pairs a weight and its gradient element by element in memory:
            # a gradient in another layout than its weight would scramble the update.
            grads_as_weights.extend(
                p.grad.stride() == p.stride()
                for p in event.model.parameters()
                if p.dim() == 4 and p.grad is not None
            )

    monkeypatch.setattr(trainer, "bf16_is_fast", lambda device: False)
    with pytest.warns(UserWarning, match="emulated and slower than float32"):
        result = train(
            make_config(train={"amp": "bf16"}), tmp_path, progress=False, callbacks=[watch_the_head]
        )
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}
    weights = load_checkpoint(result.checkpoint)["model"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    assert weights_channels_last == [True]
    assert grads_as_weights and all(grads_as_weights)
    assert all(value.is_contiguous() for value in weights.values())
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.history)
