"""The embedded dataset: fixed stratified split, 3-channel images at the configured side, indices returned."""

from __future__ import annotations

import torch

from kdbench.data import build_dataset, get_dataset_spec, list_datasets


def test_digits_is_registered_with_its_recipe():
    assert {"digits", "fake"} <= set(list_datasets())
    spec = get_dataset_spec("digits")
    assert spec.recipe.name == "digits-v1" and spec.params.image_size == 16


def test_digits_split_is_stratified_fixed_and_indexed():
    d = build_dataset("digits")
    assert (len(d.train), len(d.test)) == (1437, 360)
    x, y, i = d.test[5]
    assert x.shape == (3, 16, 16) and 0 <= y < 10 and i == 5
    test_labels = torch.tensor([d.test[j][1] for j in range(len(d.test))])
    assert torch.bincount(test_labels).min() >= 35  # every class ~20 % in test
    again = build_dataset("digits")
    assert torch.equal(d.train_targets, again.train_targets)
    other = build_dataset("digits", get_dataset_spec("digits").params.__class__(split_seed=1))
    assert not torch.equal(d.train_targets, other.train_targets)


def test_training_split_is_normalised_and_augmentation_keeps_shape():
    d = build_dataset("digits", augment="crop-pad2")
    x = torch.stack([d.train[i][0] for i in range(len(d.train))])
    assert abs(x.mean().item()) < 0.1
    assert d.train[0][0].shape == (3, 16, 16)


def test_fake_dataset_is_deterministic():
    a, b = build_dataset("fake"), build_dataset("fake")
    assert torch.equal(a.train[3][0], b.train[3][0]) and a.num_classes == 10
