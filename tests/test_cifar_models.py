"""The CRD codebase's 22 CIFAR architectures, registered in timm (kdbench.models.cifar).

Parameter counts are those of the original RepDistiller classes at 100 classes (counted from the original
code); the state-dict keys and the logits of the original classes are pinned by tests/test_crd_checkpoints.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
from fixtures_data import patch_md5, write_cifar100

import kdbench
from kdbench import _AfterTimmImport, register_cifar_models_with_timm
from kdbench.data.cifar import CIFAR100Files
from kdbench.models import FeatureTap, count_weight_layers, create_model
from kdbench.models.zoo import student_lr_scale

PARAMS = {
    "cifar_resnet8": 83_892,
    "cifar_resnet14": 181_108,
    "cifar_resnet20": 278_324,
    "cifar_resnet32": 472_756,
    "cifar_resnet44": 667_188,
    "cifar_resnet56": 861_620,
    "cifar_resnet110": 1_736_564,
    "cifar_resnet8x4": 1_233_540,
    "cifar_resnet32x4": 7_433_860,
    "cifar_resnet50": 23_705_252,
    "cifar_wrn_16_1": 180_916,
    "cifar_wrn_16_2": 703_284,
    "cifar_wrn_40_1": 569_780,
    "cifar_wrn_40_2": 2_255_156,
    "cifar_vgg8": 3_965_028,
    "cifar_vgg11": 9_277_284,
    "cifar_vgg13": 9_462_180,
    "cifar_vgg16": 14_774_436,
    "cifar_vgg19": 20_086_692,
    "cifar_mobilenetv2": 812_836,
    "cifar_shufflev1": 949_258,
    "cifar_shufflev2": 1_355_528,
}


def test_all_22_are_registered_in_timm():
    assert sorted(timm.list_models("cifar_*")) == sorted(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameters_logits_and_features_match_the_declared_feature_info(name):
    x = torch.randn(2, 3, 32, 32)
    for preact in (False, True):  # stage outputs, then the pre-activation points (`preact=True`)
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=100, preact=preact).eval()
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
        assert model.num_classes == 100 and model.get_classifier().out_features == 100
        info = model.feature_info
        assert info == (model.preact_feature_info if preact else info)
        with torch.no_grad():
            f = FeatureTap(model, stages=range(len(info)), embedding=True)(x)
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert f.logits.shape == (2, 100)
        for i, entry in enumerate(info):
            side = 32 // entry["reduction"]
            assert f.stages[i].shape == (2, entry["num_chs"], side, side), (name, entry)
        assert f.embedding.shape == (2, model.num_features) and torch.allclose(pooled, f.embedding)


@pytest.mark.parametrize("name", ["cifar_resnet8x4", "cifar_mobilenetv2", "cifar_vgg8"])
def test_timm_feature_extraction_returns_the_feature_info_stages(name):
    net = timm.create_model(name, features_only=True)
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == net.feature_info.channels()
    assert [32 // m.shape[-1] for m in maps] == net.feature_info.reduction()


def test_classifier_interface_as_timm():
    model = timm.create_model("cifar_wrn_16_1", num_classes=100).eval()
    x = torch.randn(3, 3, 32, 32)
    model.reset_classifier(10)
    assert model.num_classes == 10 and model(x).shape == (3, 10) and "fc.weight" in model.state_dict()
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model(x).shape == (3, model.num_features)
    mobile = timm.create_model("cifar_mobilenetv2", num_classes=7)  # classifier inside a Sequential
    assert mobile.get_classifier() is mobile.classifier[0] and mobile(x).shape == (3, 7)
    mobile.reset_classifier(5)
    assert "classifier.0.weight" in mobile.state_dict() and mobile(x).shape == (3, 5)


@pytest.mark.parametrize("name", ["cifar_resnet8x4", "cifar_shufflev1", "cifar_vgg8"])
def test_preact_stages_are_the_maps_before_the_stage_relu(name):
    torch.manual_seed(0)
    post = timm.create_model(name).eval()
    pre = timm.create_model(name, preact=True).eval()
    pre.load_state_dict(post.state_dict())
    assert pre.feature_info == post.preact_feature_info != post.feature_info
    stages = range(1, len(post.feature_info))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f_post, f_pre = FeatureTap(post, stages=stages)(x), FeatureTap(pre, stages=stages)(x)
    for i in stages:
        assert f_pre.stages[i].min() < 0 <= f_post.stages[i].min()
        assert torch.equal(torch.relu(f_pre.stages[i]), f_post.stages[i])


def test_kdbench_factory_keeps_the_cifar_shape_under_the_cifar_stem_recipe():
    model = create_model("cifar_resnet8x4", num_classes=100, cifar_stem=True)
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4]
    assert count_weight_layers(model) == 8
    assert count_weight_layers(create_model("cifar_wrn_40_2", num_classes=100)) == 40


def test_light_students_train_at_the_crd_lr():
    assert student_lr_scale("cifar_mobilenetv2") == student_lr_scale("cifar_shufflev2") == 0.2
    assert student_lr_scale("cifar_resnet8x4") == 1.0


def test_import_kdbench_registers_in_timm_without_importing_timm():
    code = ("import kdbench, sys; assert 'timm' not in sys.modules and 'torch' not in sys.modules; import timm; "
            "m = timm.create_model('cifar_resnet8x4', num_classes=100); print(sum(p.numel() for p in m.parameters()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1233540"


def test_with_timm_already_imported_registration_is_immediate_and_installs_no_finder():
    register_cifar_models_with_timm()  # timm is imported in this process: registers (again) at once
    assert not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path)
    assert timm.is_model("cifar_shufflev2")


def test_fitnet_end_to_end_with_a_cifar_teacher_and_student(dirs, monkeypatch):
    written = write_cifar100(dirs["data"], train_per_class=2, test_per_class=1, classes=8)
    patch_md5(monkeypatch, CIFAR100Files, written.md5)
    record = kdbench.run("fitnet", teacher="cifar_wrn_16_1", student="cifar_resnet8", dataset="cifar100",
                         data_root=dirs["data"], epochs=1, teacher_epochs=1, device="cpu",
                         sets=["recipe.batch_size=8", "teacher_recipe.batch_size=8"])
    assert record["status"] == "completed"
    assert record["student_info"]["params"] == PARAMS["cifar_resnet8"]
    assert record["teacher_metrics"]["params"] == PARAMS["cifar_wrn_16_1"]
    # the hint regressor maps the student's layer2 (32 ch) to the teacher's block2 (32 ch): a 3×3 conv + BN
    assert record["student_info"]["method_extra_params"] > 0
