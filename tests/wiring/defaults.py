"""What tests/test_method_params.py holds every registered method's parameters to.

PUBLISHED: each method's defaults, field by field, as published (the papers / reference codebases; see the
method's docstring and the README's method table). A registered method missing here fails the test; add its
complete defaults dict next to the others.

RANGES: the allowed range of a parameter, by field name, shared across methods (a `temperature` is a temperature
in every method): (low, high, low_open) with None for no bound. Every numeric field of a method's params must be
listed here or in UNCHECKED (with the reason), so a new parameter's validation is pinned when it is registered;
`w_*` fields are loss weights, [0, ∞). A key "method.field" gives one method's field its own range.
"""

from __future__ import annotations

_CRD = {"w_ce": 1.0, "w_crd": 0.8, "w_kd": 0.0, "temperature": 4.0, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
        "nce_m": 0.5, "logit_std": False}

# HKD: the authors' run (`-a 1 -b 3`: w_ce 1, w_hkd 3), CRD's contrast settings with their momentum 0.9, k = 8
# neighbours, the holistic positive smoothed with momentum 0.75 (their `get_smooth`).
_HKD = {"w_ce": 1.0, "w_hkd": 3.0, "w_kd": 0.0, "temperature": 4.0, "feat_dim": 128, "k": 8, "nce_k": 16384,
        "nce_t": 0.07, "nce_m": 0.9, "smooth_m": 0.75, "individual": True, "negatives": "opposite",
        "logit_std": False}

PUBLISHED: dict[str, dict[str, object]] = {
    "ce": {"w_ce": 1.0},
    "kd": {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, "logit_std": False},
    "fitnet": {"hint_stage": None, "guided_stage": None, "w_ce": 1.0, "w_feat": 100.0, "regressor_relu": True,
               "stages": 1, "hint_epochs": None, "w_kd": 1.0, "temperature": 4.0, "logit_std": False},
    "rkd": {"w_ce": 1.0, "w_dist": 25.0, "w_angle": 50.0},
    "crd": _CRD,
    "crd+kd": {**_CRD, "w_kd": 1.0},
    "at": {"w_ce": 1.0, "w_at": 1000.0, "pairs": "auto"},
    "pkt": {"w_ce": 1.0, "w_pkt": 30000.0},
    # RepDistiller scripts/run_cifar_distill.sh (-b per method, -r 1) and its VIDLoss / --feat_dim defaults.
    "sp": {"w_ce": 1.0, "w_sp": 3000.0},
    "cc": {"w_ce": 1.0, "w_cc": 0.02, "feat_dim": 128, "kernel": "repdistiller", "gamma": 0.4, "p_order": 2},
    "vid": {"w_ce": 1.0, "w_vid": 1.0, "init_pred_var": 5.0, "eps": 1e-5},
    "nst": {"w_ce": 1.0, "w_nst": 50.0},
    "dkd": {"w_ce": 1.0, "w_tckd": 1.0, "w_nckd": None, "temperature": 4.0, "warmup": None,
            "nckd_preset": "published", "logit_std": False},
    "hkd": _HKD,
    "hkd+kd": {**_HKD, "w_kd": 1.0},
    # DIST: image_classification_sota's dist_cifar.yaml (kd_loss_weight 2 × β = γ = 1, dist_t4).
    "dist": {"w_ce": 1.0, "w_inter": 2.0, "w_intra": 2.0, "temperature": 4.0, "logit_std": False},
    # CTKD: zhengli97/CTKD's scripts/run_cifar_distill.sh (-r 0.1 -a 0.9, t_start 1, t_end 20, decay_min -1,
    # decay_loops 10 of 240 epochs, resolved per run; global temperature).
    "ctkd": {"w_ce": 0.1, "w_kd": 0.9, "temperature_min": 1.0, "temperature_span": 20.0, "lambda_max": 1.0,
             "lambda_epochs": None, "temperature_mode": "global", "logit_std": False},
    "cnn2gnn": {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, "graph": "batch", "k": 10, "hidden": 256,
                "proj_dim": 256, "anchors": 256, "dropout": 0.5, "pool": 0,
                # kdbench's own options (docs/cnn2gnn.md): CRD's memory momentum for graph=memory, the graph built
                # on the student's features, the batch graph per rank in data-parallel runs.
                "memory_momentum": 0.5, "graph_features": "student", "graph_scope": "rank",
                "logit_std": False},
    # OFA: Hao840/OFAKD train.py's defaults (--gt/--kd/--ofa-loss-weight 1, --ofa-eps 1, --ofa-temperature 1,
    # --ofa-stage 1 2 3 4).
    "ofa": {"w_ce": 1.0, "w_kd": 1.0, "w_ofa": 1.0, "eps": 1.0, "temperature": 1.0, "stages": "1,2,3,4"},
    # mdistiller cfg.py CFG.OFD / CFG.REVIEWKD (w_review None: 5 for resnet32x4→8x4 by its config, else 1).
    "ofd": {"w_ce": 1.0, "w_feat": 0.001, "connector_kernel": 1},
    "reviewkd": {"w_ce": 1.0, "w_review": None, "warmup": None, "max_mid_channels": 512, "student_preact": False},
    # RepDistiller's pre-stage methods: the init loss unweighted (helper/pretrain.py), 30 of 240 init epochs
    # (rescaled when resolved, hence None here); FT's -b 200 and factor rate 0.5 (models/util.py).
    "ab": {"w_ce": 1.0, "w_ab": 1.0, "margin": 1.0, "init_epochs": None},
    "ft": {"w_ce": 1.0, "w_ft": 200.0, "w_rec": 1.0, "factor_rate": 0.5, "init_epochs": None},
    "fsp": {"w_ce": 1.0, "w_fsp": 1.0, "init_epochs": None},
    # mdistiller/engine/cfg.py CFG.KDSVD (RepDistiller's KDSVD(k=1); its script gives KDSVD no -b).
    "kdsvd": {"w_ce": 1.0, "w_svd": 1.0, "k": 1},
}

WEIGHT_RANGE = (0.0, None, False)
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "temperature": (0.0, 100.0, True),
    "stages": (1, 2, False),
    "hint_epochs": (1, None, False),
    "feat_dim": (1, 65536, False),
    "nce_k": (1, None, False),
    "nce_t": (0.0, 100.0, True),
    "nce_m": (0.0, 1.0, False),
    "memory_momentum": (0.0, 1.0, False),
    "k": (0, 1000, False),
    "hidden": (1, 65536, False),
    "proj_dim": (1, 65536, False),
    "dropout": (0.0, 1.0, False),
    "pool": (0, 224, False),
    "smooth_m": (0.0, 1.0, False),
    "warmup": (0, None, False),
    "temperature_min": (0.0, 100.0, True),
    "temperature_span": (0.0, 100.0, False),
    "lambda_max": (0.0, 100.0, False),
    "lambda_epochs": (0, None, False),
    "init_pred_var": (0.0, 1e4, True),
    "eps": (0.0, 1.0, True),
    "cc.gamma": (0.0, 100.0, True),
    "p_order": (0, 20, False),
    # A method whose field of a shared name has another range: "method.field" wins over "field".
    "hkd.k": (1, 100_000, False),
    "hkd+kd.k": (1, 100_000, False),
    "ofa.eps": (0.0, 10.0, True),  # the exponent of the target enhancement (the reference uses 1 to 1.5)
    "connector_kernel": (1, 7, False),  # odd only: tests/test_method_ofd.py
    "max_mid_channels": (1, 4096, False),
    "init_epochs": (1, None, False),
    "margin": (0.0, None, True),
    "factor_rate": (0.0, 1.0, True),
    "kdsvd.k": (1, 64, False),
}

UNCHECKED = {
    "hint_stage": "checked against the model's stages when the method is built (tests/test_method_fitnet.py)",
    "guided_stage": "idem",
    "anchors": "its lower bound depends on k and the graph mode (tests/test_method_params.py, cnn2gnn case)",
}
