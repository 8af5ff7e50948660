"""The pipeline's findings in words (results.findings), from records."""
from __future__ import annotations

from emae.records import append_records
from results.findings import findings
from test_results import fmnist


def _backbone(method, knn, probe, seed=0, **protocols):
    recs = [fmnist(method, 4, "knn", knn, seed=seed), fmnist(method, 4, "linprobe", probe, seed=seed)]
    for protocol, (metric, value) in protocols.items():
        recs.append(fmnist(method, 4, protocol, value, metric=metric, seed=seed))
    return recs


def test_findings_say_what_the_pipeline_measured(tmp_path):
    run, reference, spread = tmp_path / "run", tmp_path / "study", tmp_path / "spread"
    append_records(run / "records.jsonl", [
        *_backbone("untrained", 70.6, 77.8, finetune=("top1", 85.0), upernet=("mIoU", 30.0),
                   **{"vitdet-mask-rcnn": ("APb", 9.0)}),
        *_backbone("mae", 79.1, 82.3, finetune=("top1", 86.5), upernet=("mIoU", 33.0),
                   **{"vitdet-mask-rcnn": ("APb", 9.2)}),
        *_backbone("emae", 73.0, 79.0, finetune=("top1", 81.0)),
        fmnist("mae", 4, "pretrain", 0.7, metric="loss", wall_time_s=260.0, extra={"epochs_run": 4.0}),
        fmnist("emae", 4, "pretrain", 0.8, metric="loss", wall_time_s=258.0,
               extra={"epochs_run": 1.78, "time_budget_s": 260.0})])
    append_records(reference / "records.jsonl", [
        *_backbone("mae", 77.0, 81.0), *_backbone("mae", 78.0, 81.2, seed=1),
        *_backbone("emae", 73.0, 79.0), *_backbone("emae", 74.0, 79.4, seed=1),
        fmnist("mae", 8, "knn", 75.0),  # a longer MAE without EMAE beside it is not "equal epochs"
        fmnist("mae", 4, "pretrain", 0.7, metric="loss", wall_time_s=100.0),
        fmnist("emae", 4, "pretrain", 0.8, metric="loss", wall_time_s=250.0)])
    append_records(spread / "records.jsonl", [  # std 0.2 (MAE) and 0.15 (untrained) over 3 seeds, for both stages
        fmnist(m, 4, p, v, metric=k, seed=s) for m, values in (("mae", (9.0, 9.4, 9.2)), ("untrained", (8.8, 9.1, 9.0)))
        for p, k in (("vitdet-mask-rcnn", "APb"), ("upernet", "mIoU")) for s, v in enumerate(values)])
    lines = findings(run, reference, spread)
    assert lines[0] == ("MAE beats the untrained backbone: +8.5 kNN (79.1 against 70.6) and +4.5 linear-probe "
                        "(82.3 against 77.8) points.")
    assert lines[1] == ("EMAE at MAE's pre-training time (258 s against MAE's 260 s: 1.78 epochs against MAE's "
                        "4.00), against MAE: -6.1 kNN (73.0 against 79.1) and -3.3 linear-probe (79.0 against "
                        "82.3) points.")
    assert lines[2] == ("EMAE at MAE's epochs (4 epochs, 2 seeds, from " + str(reference) + "), against MAE: -4.0 kNN "
                        "(73.5 against 77.5) and -1.9 linear-probe (79.2 against 81.1) points; EMAE's pre-training "
                        "took 2.5x MAE's time.")
    assert lines[3].startswith("Fine-tuning top-1: MAE 86.5, EMAE 81.0, untrained 85.0. MAE's fine-tune is +4.2 "
                               "(above) its linear probe. EMAE's fine-tune is +2.0 (above)")
    detect, segment = lines[4:]
    # APb 9.2 against 9.0: inside twice the larger seed std (0.2): the stage cannot tell
    assert detect.startswith("ViTDet box AP: MAE 9.2, untrained 9.0 (+0.2); its seed-to-seed standard deviation is "
                             "0.20 (3 seeds") and detect.endswith("this stage cannot tell them apart.")
    assert segment.startswith("UperNet mIoU: MAE 33.0, untrained 30.0 (+3.0)")
    assert segment.endswith("MAE is ahead by more than twice that.")
    # without seed spread, a downstream stage says it cannot tell; a probe MAE loses is said so
    append_records(run / "records.jsonl", [fmnist("mae", 4, "linprobe", 70.0, date="2999-01-01T00:00:00+00:00")])
    lines = findings(run)
    assert lines[0].startswith("MAE does not beat the untrained backbone: +8.5 kNN")
    assert lines[-1].endswith("no seed spread of this stage is recorded (), so it cannot tell them apart.")


def test_a_run_trained_for_a_wall_time_is_a_variant_of_its_method():
    from results.tables import variant_of

    budgeted = fmnist("emae", 4, "knn", 73.0, extra={"time_budget_s": 261.0, "parts": 4})
    assert variant_of(budgeted) == "in 261 s"
    assert variant_of(fmnist("emae", 4, "knn", 73.0, extra={"parts": 4})) == ""
