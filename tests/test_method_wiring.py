"""Every registered method's loss terms equal its public loss functions times its weights (tests/wiring/oracles.py).

One tiny fixed batch, tiny real timm models, hooks that record what student and teacher computed; each method is
run at its defaults and at the variants its oracle lists (every weight and temperature changed at least once), so a
swapped weight, a wrong temperature or a student/teacher mix-up in `forward_train` changes a number here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
from wiring.oracles import ORACLES, Case, OracleSpec, variant_params

from kdbench.models import create_model
from kdbench.models.features import Features, stage_modules
from kdbench.train.method import Batch, MethodContext, get_method, list_methods

NUM_CLASSES, SIDE, NUM_TRAIN, EPOCHS = 5, 16, 40, 3
ORACLE_FILE = "tests/wiring/oracles.py"
VARIANT_LABEL_SMOOTHING = 0.2


class Recorder:
    """Forward hooks on a model that keep what its last forward computed: logits, every feature_info stage output
    and the classifier's input (the same modules the methods hook, so the same tensors)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.stages: dict[int, torch.Tensor] = {}
        self.embedding: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        modules = dict(model.named_modules())
        for sid, (name, _) in enumerate(stage_modules(model)):
            modules[name].register_forward_hook(lambda m, i, o, sid=sid: self.stages.__setitem__(sid, o))
        model.get_classifier().register_forward_pre_hook(lambda m, i: setattr(self, "embedding", i[0].flatten(1)))
        model.register_forward_hook(self._done)
        # kdbench.models.taps.IntermediateTap runs forward_intermediates then forward_head, not model(x): its
        # forward_head call (outside model(x), which calls forward_head itself) is the model's forward too.
        self._in_forward = False
        model.register_forward_pre_hook(lambda m, i: setattr(self, "_in_forward", True))
        head = getattr(model, "forward_head", None)
        if callable(head):
            def forward_head(*args, **kwargs):
                out = head(*args, **kwargs)
                if not self._in_forward:
                    self._done(model, args, out)
                return out

            model.forward_head = forward_head

    def _done(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._in_forward = False
        self.calls += 1
        self.logits = output

    def features(self) -> Features:
        return Features(self.logits, dict(self.stages), self.embedding)


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    index = torch.tensor([3, 17, 0, 29, 8, 36])
    return Batch(torch.randn(6, 3, SIDE, SIDE, generator=g), index % NUM_CLASSES, index)


def _context(label_smoothing: float = 0.0) -> MethodContext:
    return MethodContext(num_classes=NUM_CLASSES, in_chans=3, image_size=SIDE, num_train=NUM_TRAIN,
                         train_targets=torch.arange(NUM_TRAIN) % NUM_CLASSES, epochs=EPOCHS, seed=0,
                         label_smoothing=label_smoothing)


def _cases() -> list[tuple[str, int]]:
    # A method without an oracle still gets its case 0, which fails with the message of _oracle_for.
    return [(name, i) for name in list_methods() for i in range(1 + len(getattr(ORACLES.get(name), "variants", ())))]


def _oracle_for(name: str) -> OracleSpec:
    if name not in ORACLES:
        pytest.fail(f"method '{name}' is registered but has no wiring oracle: add "
                    f"`@oracle(\"{name}\", variants=[...])` returning its expected loss terms in {ORACLE_FILE} "
                    "(the pattern is described at its top)")
    return ORACLES[name]


def test_every_oracle_names_a_registered_method():
    stale = sorted(set(ORACLES) - set(list_methods()))
    assert not stale, f"oracles for unregistered methods in {ORACLE_FILE}: {stale}"


@pytest.mark.parametrize("name", list_methods())
def test_variants_change_every_weight_and_temperature(name: str):
    spec, defaults = _oracle_for(name), get_method(name).params
    fields = [f.name for f in dataclasses.fields(defaults)] if dataclasses.is_dataclass(defaults) else []
    tuned = [f for f in fields if f.startswith("w_") or "temperature" in f or f == "nce_t"]
    variants = [variant_params(defaults, v) for v in spec.variants]
    unchanged = [f for f in tuned if all(getattr(v, f) == getattr(defaults, f) for v in variants)]
    assert not unchanged, f"no variant of '{name}' in {ORACLE_FILE} changes {unchanged}"
    weights = [f for f in fields if f.startswith("w_")]
    assert any(len({getattr(v, f) for f in weights}) == len(weights) for v in [defaults, *variants]), (
        f"no case of '{name}' has all of {weights} pairwise distinct: a swap of two weights would go unseen")


@pytest.mark.parametrize("name,variant", _cases())
def test_loss_terms_equal_the_public_loss_functions_times_the_weights(name: str, variant: int):
    spec, method_spec = _oracle_for(name), get_method(name)
    overrides = {} if variant == 0 else spec.variants[variant - 1]
    params = variant_params(method_spec.params, overrides)
    epoch = overrides.get("_epoch", 1)
    torch.manual_seed(0)
    student = create_model(spec.student, num_classes=NUM_CLASSES, image_size=SIDE, **spec.student_options)
    teacher = (create_model(spec.teacher, num_classes=NUM_CLASSES, image_size=SIDE) if method_spec.needs_teacher
               else None)
    # Every variant runs with the recipe's label smoothing on: each method's CE term must go through it.
    ctx, batch = _context(VARIANT_LABEL_SMOOTHING if variant else 0.0), _batch()
    method = method_spec.cls(student, teacher, params, ctx).train()
    s_rec = Recorder(student)
    t_rec = Recorder(teacher) if teacher is not None else None
    method.on_epoch_start(epoch)
    state_before = {k: v.detach().clone() for k, v in method.state_dict().items()}
    torch.manual_seed(1)
    rng_state = torch.get_rng_state()
    logits, losses = method.forward_train(batch)

    assert s_rec.calls == 1 and (t_rec is None or t_rec.calls == overrides.get("_teacher_calls", 1))
    assert logits is s_rec.logits  # the logits the engine scores are the student's own
    case = Case(method, params, ctx, batch, s_rec.features(), t_rec.features() if t_rec else None, epoch,
                state_before, rng_state)
    with torch.no_grad():
        expected = spec.fn(case)
    expected_losses = {k: v for k, v in expected.items() if not k.startswith("state:")}
    assert set(losses) == set(expected_losses), f"{name}: loss terms {sorted(losses)} != {sorted(expected_losses)}"
    for term, value in expected_losses.items():
        assert losses[term].dim() == 0
        torch.testing.assert_close(losses[term].detach().float(), value.float(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, term=term: f"{name} variant {variant}, term '{term}': {m}")
    state_after = method.state_dict()
    for key, value in expected.items():
        if key.startswith("state:"):
            torch.testing.assert_close(state_after[key[len("state:"):]], value, rtol=1e-5, atol=1e-6)
