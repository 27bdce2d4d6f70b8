"""The plain-line reporter of sweep jobs and `--nproc` rank 0 (kdbench.core.progress.LineReporter): one line per
epoch with the same words as the terminal's, one per message, text printed as it is."""

from __future__ import annotations

import io

from kdbench.core.progress import LineReporter, epoch_line

SUMMARY = {"lr": 0.05, "losses": {"ce": 0.25, "total": 0.25}, "train_top1": 91.5, "top1": 90.0, "top5": 99.5,
           "epoch_s": 1.25}


def test_an_epoch_is_one_line_with_its_lr_losses_and_accuracies():
    assert epoch_line("epoch 2/10", SUMMARY) == ("epoch 2/10: lr=0.05 ce=0.2500 total=0.2500 train_top1=91.50 "
                                                "top1=90.00 top5=99.50 (1.2s)")
    with_val = epoch_line("epoch 2/10", {**SUMMARY, "val_top1": 88.0})
    assert with_val.endswith("top5=99.50 val_top1=88.00 (1.2s)")


def test_the_line_reporter_prints_epochs_and_messages_literally_and_nothing_else():
    out = io.StringIO()
    reporter = LineReporter(out)
    reporter.phase_start("epoch 1/3", total=4)
    reporter.step(1, loss=0.3)
    reporter.iteration(1, {"ce": 0.3}, 0.05)
    reporter.phase_end(SUMMARY)
    reporter.phase_end({"not": "an epoch"})  # an evaluation phase's summary has no top1: no line
    reporter.log("resumed run cnn2gnn [cnn2gnn.k=0]")
    assert out.getvalue().splitlines() == [epoch_line("epoch 1/3", SUMMARY), "› resumed run cnn2gnn [cnn2gnn.k=0]"]
