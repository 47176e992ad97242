"""The infotheoretic detector: losses, options, scores, selection, collapse, semi-supervision."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from darklens.data.lensdata import LensData
from darklens.errors import DataError
from darklens.models.base import create_detector, list_detectors
from darklens.models.infotheoretic import (
    CollapseWarning,
    InfoTheoretic,
    select_labelled,
    spearman,
)
from darklens.models.infotheoretic.selection import auroc as selection_auroc
from darklens.models.losses import entropy_penalty
from darklens.train.loop import TrainConfig, fit

S = 32
SMALL = dict(image_size=S, width=8, depth=3, feat_dim=32, proj_dim=16)


def rings(n: int, seed: int, blob: bool = False) -> torch.Tensor:
    """Noisy rings of random radius; ``blob`` adds a bright compact clump near the ring."""
    g = torch.Generator().manual_seed(seed)
    c = (S - 1) / 2
    y, x = torch.meshgrid(torch.arange(S) - c, torch.arange(S) - c, indexing="ij")
    rad = 6 + 3 * torch.rand(n, generator=g)
    r = torch.sqrt(x**2 + y**2)
    img = torch.exp(-0.5 * ((r[None] - rad[:, None, None]) / 1.2) ** 2)[:, None]
    if blob:
        ang = torch.rand(n, generator=g) * 2 * math.pi
        bx, by = (rad + 1) * torch.cos(ang), (rad + 1) * torch.sin(ang)
        d2 = (x[None] - bx[:, None, None]) ** 2 + (y[None] - by[:, None, None]) ** 2
        img[:, 0] += 1.5 * torch.exp(-0.5 * d2 / 1.5**2)
    return img + 0.05 * torch.randn(img.shape, generator=g)


def train(epochs: int = 4, n: int = 256, **config) -> InfoTheoretic:
    det = create_detector("infotheoretic", **{**SMALL, **config})
    fit(det, TensorDataset(rings(n, 0)), TensorDataset(rings(64, 1)),
        TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, scheduler="cosine", progress=False))
    return det


def auroc(det: InfoTheoretic, name: str | None = None) -> float:
    normal, anomalous = rings(100, 2), rings(100, 3, blob=True)
    scores = det.score_all(torch.cat([normal, anomalous]))
    s = scores[name] if name else det.score(torch.cat([normal, anomalous]))
    return float(roc_auc_score([0] * 100 + [1] * 100, s.numpy()))


@pytest.fixture(scope="module")
def trained() -> InfoTheoretic:
    return train()


def test_registered() -> None:
    assert "infotheoretic" in list_detectors()


@pytest.mark.parametrize("bad", [dict(penalty="l3"), dict(critic="rbf"), dict(beta=-1.0),
                                 dict(entropy_on="head"), dict(augment="zoom"),
                                 dict(score="recon"), dict(semi_form="x")])
def test_bad_config(bad: dict) -> None:
    with pytest.raises(ValueError):
        create_detector("infotheoretic", **bad)


def test_loss_makes_its_own_views_reproducibly() -> None:
    x = rings(16, 0)
    a, b = (create_detector("infotheoretic", **SMALL, seed=3) for _ in range(2))
    la, lb = a.training_loss(x), b.training_loss(x)
    assert torch.isfinite(la) and la.item() == pytest.approx(lb.item(), rel=1e-6)
    la.backward()
    assert all(p.grad is not None for p in a.backbone.parameters())
    # The augmentation RNG is part of the state: a copy continues with the same views.
    state = {k: v.clone() for k, v in a.state_dict().items()}
    c = create_detector("infotheoretic", **SMALL, seed=3)
    c.load_state_dict(state)
    assert c.training_loss(x).item() == pytest.approx(a.training_loss(x).item(), rel=1e-6)
    assert a.training_loss(x).item() != pytest.approx(la.item(), rel=1e-6)  # new views


@pytest.mark.parametrize("entropy_on", ["projection", "backbone"])
@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_entropy_term_acts_where_configured(entropy_on: str, penalty: str) -> None:
    det = create_detector("infotheoretic", **SMALL, entropy_on=entropy_on, penalty=penalty)
    det.eval()
    x = rings(8, 0)
    h, p = det.encode(x)
    expected = entropy_penalty(p if entropy_on == "projection" else h, penalty)
    assert torch.allclose(det.score_all(x)["norm"], expected, rtol=1e-5)
    # Only the penalty: its gradient reaches the head only when it acts on the projection.
    det.zero_grad()
    det.penalty(det._z(*det.encode(x))).mean().backward()
    head_grad = sum(float(q.grad.abs().sum()) for q in det.head.parameters() if q.grad is not None)
    assert (head_grad > 0) == (entropy_on == "projection")
    assert all(q.grad is not None for q in det.backbone.parameters())


@pytest.mark.parametrize("normalise", [True, False])
def test_critic_sees_normalised_z_while_penalty_sees_raw(normalise: bool) -> None:
    det = create_detector("infotheoretic", **SMALL, critic="bilinear", normalise=normalise)
    p = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    scaled = det.critic(3 * p, 3 * p)
    if normalise:
        assert torch.allclose(scaled, det.critic(p, p), atol=1e-5)
    else:
        assert torch.allclose(scaled, 9 * det.critic(p, p), atol=1e-4)
    assert torch.allclose(det.penalty(3 * p), 9 * det.penalty(p))  # raw z, always


def test_scores_need_the_bank() -> None:
    det = create_detector("infotheoretic", **SMALL, score="knn").eval()
    x = rings(4, 0)
    all_scores = det.score_all(x)
    assert torch.isnan(all_scores["knn"]).all() and torch.isfinite(all_scores["norm"]).all()
    with pytest.raises(RuntimeError, match="memory bank"):
        det.score(x)


def test_trained_detector_finds_blobs(trained: InfoTheoretic) -> None:
    diag = trained.diagnostics()
    assert diag["bank_size"] == 256 * 8  # every training image and its 7 other turns/flips
    assert diag["selected_score"] in trained.score_names()
    assert set(diag["pseudo_auroc"]) == set(trained.score_names())
    assert not diag["collapsed"]
    scores = trained.score_all(rings(10, 5))
    assert set(scores) == {"norm", "neg_norm", "knn", "critic"}
    assert all(s.shape == (10,) and torch.isfinite(s).all() for s in scores.values())
    assert torch.allclose(scores["norm"], -scores["neg_norm"])
    assert auroc(trained) > 0.9  # the label-free default
    assert auroc(trained, "knn") > 0.9


def test_save_load_round_trip(trained: InfoTheoretic) -> None:
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    fresh = create_detector("infotheoretic", **trained.config)
    fresh.load_state_dict(state)
    fresh.eval()
    x = rings(12, 6)
    assert fresh.default_score == trained.default_score
    for name, s in trained.score_all(x).items():
        assert torch.allclose(fresh.score_all(x)[name], s, atol=1e-6), name


def test_label_free_selection_uses_normal_images_only(trained: InfoTheoretic) -> None:
    normal = rings(64, 7)
    result = trained.select_score(normal)
    assert set(result) == set(trained.score_names())
    for values in result.values():
        assert 0.0 <= values["pseudo_auroc"] <= 1.0
        assert -1.0 <= values["view_consistency"] <= 1.0
    # Rank correlation cannot see the sign of a score: norm and neg_norm tie on consistency.
    assert result["norm"]["view_consistency"] == pytest.approx(
        result["neg_norm"]["view_consistency"])
    assert result["norm"]["pseudo_auroc"] == pytest.approx(
        1 - result["neg_norm"]["pseudo_auroc"], abs=1e-6)


def test_spearman() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.ones(4)) == 0.0
    assert spearman(a, torch.tensor([1.0, float("nan"), 3.0, 4.0])) == 0.0


def test_selection_auroc_is_mann_whitney() -> None:
    """Ties count one half, infinite scores keep their order, NaN gives chance."""
    normal = torch.tensor([0.0, 1.0, 2.0, 2.0])
    anomalous = torch.tensor([2.0, 3.0, float("inf")])
    diff = anomalous[:, None] - normal[None, :]
    expected = float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    assert selection_auroc(normal, anomalous) == pytest.approx(expected)
    assert selection_auroc(anomalous, normal) == pytest.approx(1 - expected)
    assert selection_auroc(normal, torch.tensor([float("nan")])) == 0.5


def test_large_beta_collapse_is_detected() -> None:
    with pytest.warns(CollapseWarning, match="collapsed"):
        det = train(epochs=8, n=128, beta=100.0, entropy_on="backbone")
    assert det.diagnostics()["collapsed"]
    assert bool(det.collapsed)


def test_no_collapse_warning_at_small_beta() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        det = train(epochs=2, n=128, beta=1e-3)
    assert not det.diagnostics()["collapsed"]


@pytest.mark.filterwarnings("ignore::darklens.models.infotheoretic.CollapseWarning")
def test_semi_supervised_pushes_labelled_anomalies_out() -> None:
    aurocs = {}
    for labelled in (True, False):
        det = create_detector("infotheoretic", **SMALL, critic="bilinear", normalise=False,
                              beta=0.1, eta=1.0, score="norm", augment="full")
        if labelled:
            det.set_labelled_anomalies(rings(20, 8, blob=True))
        fit(det, TensorDataset(rings(256, 0)), None,
            TrainConfig(epochs=4, batch_size=64, lr=3e-3, scheduler="cosine", progress=False))
        aurocs[labelled] = auroc(det, "norm")  # held-out anomalies of the labelled kind
    assert aurocs[True] > 0.9
    assert aurocs[True] > aurocs[False] + 0.1
    # The batch-dict form gives a finite loss with the anomaly term.
    det.train()
    loss = det.training_loss({"images": rings(8, 0), "anomalies": rings(4, 9, blob=True)})
    assert torch.isfinite(loss)
    det.set_labelled_anomalies(None)
    assert det._sample_anomalies(None) is None


def test_select_labelled() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 2], dtype=np.int64)
    images = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1) * np.ones((1, 1, 4, 4), np.float32)
    picked = select_labelled(LensData(images=images, labels=labels), 2, seed=0)
    assert picked.shape == (4, 1, 4, 4)
    assert set(picked[:, 0, 0, 0].tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    with pytest.raises(DataError):
        select_labelled(LensData(images=images[:2], labels=labels[:2]), 2)
    with pytest.raises(DataError):
        select_labelled(LensData(images=images, labels=labels), 0)


def test_hybrids_center_and_reconstruction() -> None:
    det = train(epochs=2, n=128, center=True, recon_weight=1.0)
    assert det.center_vec.abs().sum() > 0  # the SVDD-style centre from the initial pass
    scores = det.score_all(rings(6, 4))
    assert "recon" in scores and torch.isfinite(scores["recon"]).all()


def test_stacked_native_views_train_on_two_different_renderings() -> None:
    """A batch (B, V, H, W) holds V renderings of each lens; training pairs two different ones,
    and the memory bank and scores use the first rendering only."""
    base = rings(64, 0)
    g = torch.Generator().manual_seed(5)
    stack = torch.cat([base + 0.05 * torch.randn(base.shape, generator=g) for _ in range(3)], 1)
    det = create_detector("infotheoretic", **SMALL, augment="none")
    v1, v2 = det._two_views(stack[:8], torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (8, 1, S, S)
    picks = [[int(torch.nonzero((stack[i] - v[i]).abs().flatten(1).amax(1) == 0)[0])
              for i in range(8)] for v in (v1, v2)]
    assert all(a != b for a, b in zip(*picks, strict=True))
    fit(det, TensorDataset(stack), TensorDataset(stack[:16]),
        TrainConfig(epochs=1, batch_size=32, progress=False))
    assert det.bank_backbone.shape[0] == 64 * 8
    h, _ = det.encode(stack[:, :1])
    assert torch.allclose(det.bank_backbone[:64], h, atol=1e-5)
    assert torch.isfinite(det.score(rings(4, 1))).all()
    bad = create_detector("infotheoretic", **{**SMALL, "in_channels": 2})
    with pytest.raises(ValueError, match="stack"):
        bad.training_loss(torch.zeros(4, 3, S, S))


def test_dihedral_bank_holds_the_turned_training_images() -> None:
    x = rings(40, 0)
    for dihedral in (True, False):
        det = create_detector("infotheoretic", **SMALL, bank_dihedral=dihedral).eval()
        det.fit_end([x[:32], x[32:]], [rings(8, 1)])
        assert det.bank_backbone.shape[0] == 40 * (8 if dihedral else 1)
        h, _ = det.encode(x)
        assert torch.allclose(det.bank_backbone[:40], h, atol=1e-5)
    det = create_detector("infotheoretic", **SMALL).eval()
    det.fit_end([x], None)  # no validation data: the choice holds images (and turns) out
    assert det.bank_backbone.shape[0] == 40 * 8
    assert torch.allclose(det.bank_backbone[-40:], det.encode(torch.rot90(
        x.flip(-1), 3, dims=(-2, -1)))[0], atol=1e-5)
    assert int(det.selected_score) >= 0


def _scale_head_output(det: InfoTheoretic, factor: float) -> None:
    """Multiply the projection head's last layer (weights and bias) by ``factor``: z -> f z."""
    last = det.head.net[-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)


@pytest.mark.parametrize("critic", ["cosine", "dot"])
def test_entropy_bound_is_inert_under_a_normalised_critic_only(critic: str) -> None:
    # Shrinking z lowers R(z) by the square; it is free for InfoNCE only when the critic sees
    # z / |z| (the seed's form), which is why beta traded nothing there.
    det = create_detector("infotheoretic", **SMALL, critic=critic, seed=1)  # batch statistics
    x = rings(32, 0)
    _scale_head_output(det, 20.0)  # an untrained head's z is tiny: give the critic some range
    with torch.no_grad():
        before = det._contrastive_terms(x, torch.Generator().manual_seed(0))
        _scale_head_output(det, 0.5)
        after = det._contrastive_terms(x, torch.Generator().manual_seed(0))
    assert float(after["entropy"]) == pytest.approx(0.25 * float(before["entropy"]), rel=1e-4)
    assert abs(float(before["infonce"])) > 0.01
    same = float(after["infonce"]) == pytest.approx(float(before["infonce"]), abs=1e-4)
    assert same == (critic == "cosine")
    assert det.entropy_coupled == (critic == "dot")
    assert det.diagnostics()["entropy_coupled"] == (critic == "dot")


def _final_terms(beta: float) -> dict[str, float]:
    det = create_detector("infotheoretic", **SMALL, critic="dot", beta=beta, seed=0)
    result = fit(det, TensorDataset(rings(256, 0)), None,
                 TrainConfig(epochs=4, batch_size=64, lr=3e-3, scheduler="cosine",
                             progress=False))
    return result.history[-1]


@pytest.mark.filterwarnings("ignore::darklens.models.infotheoretic.CollapseWarning")
def test_raising_beta_lowers_the_entropy_and_infonce_bounds_together() -> None:
    rows = [_final_terms(beta) for beta in (0.0, 1.0, 10.0)]
    entropy = [r["entropy_bound"] for r in rows]
    infonce = [r["infonce_bound"] for r in rows]
    assert entropy[0] > 2 * entropy[1] > 4 * entropy[2], entropy
    assert infonce[0] > infonce[1] > infonce[2], infonce
    assert all(0 < i <= math.log(64) + 1e-6 for i in infonce)


def test_losses_csv_has_a_column_per_term(tmp_path) -> None:
    det = create_detector("infotheoretic", **SMALL, critic="dot", beta=0.1, eta=1.0)
    det.set_labelled_anomalies(rings(8, 8, blob=True))
    fit(det, TensorDataset(rings(128, 0)), TensorDataset(rings(32, 1)),
        TrainConfig(epochs=2, batch_size=64, progress=False, out_dir=str(tmp_path)))
    import csv

    with open(tmp_path / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for col in ("infonce_bound", "entropy_bound", "semi_term", "train_loss"):
        assert all(math.isfinite(float(r[col])) for r in rows), col
    # The columns are the terms of the loss: their weighted sum is the training loss.
    for r in rows:
        total = -float(r["infonce_bound"]) + 0.1 * float(r["entropy_bound"]) + float(
            r["semi_term"])
        assert total == pytest.approx(float(r["train_loss"]), rel=1e-4)


def test_spatial_encoder_keeps_position_and_scores_patches() -> None:
    det = create_detector("infotheoretic", **SMALL, encoder="spatial", patch_dim=8,
                          bank_dihedral=False)
    assert "patch_knn" in det.score_names()
    det.eval()
    x = rings(4, 0)
    h, p, maps = det._encode_maps(x)
    assert maps.shape == (4, 8, S // 4, S // 4) and h.shape == (4, SMALL["feat_dim"])
    # A constant image has no structure: only the coordinate channels can make its latent
    # depend on where things are, and a pooled encoder could not tell the halves apart.
    left, right = torch.zeros(1, 1, S, S), torch.zeros(1, 1, S, S)
    left[..., : S // 2], right[..., S // 2:] = 1.0, 1.0
    hl, hr = det.encode(left)[0], det.encode(torch.flip(left, dims=(-1,)))[0]
    assert not torch.allclose(hl, hr, atol=1e-4)
    assert torch.allclose(det.encode(right)[0], hr, atol=1e-5)


def test_spatial_patch_score_finds_blobs() -> None:
    det = train(encoder="spatial", patch_dim=8, bank_dihedral=False)
    assert det.bank_patches.shape[1:] == (S // 4 * S // 4, 8)
    assert auroc(det, "patch_knn") > 0.9
    state = {k: v.clone() for k, v in det.state_dict().items()}
    copy = create_detector("infotheoretic", **det.config)
    copy.load_state_dict(state)
    copy.eval()
    x = rings(6, 3, blob=True)
    assert torch.allclose(copy.score_all(x)["patch_knn"], det.score_all(x)["patch_knn"])


def test_physical_pseudo_anomalies_drive_the_choice(trained: InfoTheoretic) -> None:
    normal = rings(64, 7)
    trained.set_pseudo_anomalies(rings(64, 9, blob=True))
    try:
        result = trained.select_score(normal)
        diag = trained.diagnostics()
    finally:
        trained.set_pseudo_anomalies(None)
    assert diag["pseudo_kind"] == "physical"
    # Blobs are easy: the chosen score separates them; the patch-swap AUROC is kept beside.
    assert result[trained.default_score]["pseudo_auroc"] > 0.9
    assert diag["patch_swap_auroc"] == {n: pytest.approx(v["patch_swap_auroc"])
                                        for n, v in result.items()}
    assert trained.select_score(normal)[trained.default_score]["pseudo_auroc"] == pytest.approx(
        trained.diagnostics()["patch_swap_auroc"][trained.default_score])


def test_epoch_choice_follows_the_pseudo_auroc_of_physical_pseudo_anomalies() -> None:
    normal, blobs = rings(64, 1), rings(64, 9, blob=True)
    det = train(epochs=3, epoch_choice="auto")
    assert det.selection_loss([rings(64, 0)], [normal]) is None  # no physical pseudo-anomalies
    det.set_pseudo_anomalies(blobs)
    loss = det.selection_loss([rings(64, 0)], [normal])
    # minus the chosen score's AUROC of blobs against the validation normals (computed here)
    chosen = det.default_score
    s = det.score_all(torch.cat([normal, blobs]))[chosen]
    assert loss == pytest.approx(-roc_auc_score([0] * 64 + [1] * 64, s.numpy()), abs=1e-6)
    assert loss < -0.9
    det.config["epoch_choice"] = "validation"
    assert det.selection_loss([rings(64, 0)], [normal]) is None
    with pytest.raises(ValueError, match="epoch_choice"):
        create_detector("infotheoretic", **SMALL, epoch_choice="best")


def test_training_keeps_the_epoch_with_the_best_pseudo_auroc(tmp_path) -> None:
    det = create_detector("infotheoretic", **SMALL)
    det.set_pseudo_anomalies(rings(64, 9, blob=True))
    result = fit(det, TensorDataset(rings(256, 0)), TensorDataset(rings(64, 1)),
                 TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False,
                             out_dir=str(tmp_path)))
    choice = [row["selection_loss"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmin(choice))
    assert result.best_val_loss == pytest.approx(min(choice))


def test_a_model_saved_before_the_patch_buffers_still_loads(trained: InfoTheoretic) -> None:
    state = {k: v for k, v in trained.state_dict().items()
             if k not in ("bank_patches", "patch_swap_values")}
    copy = create_detector("infotheoretic", **trained.config)
    copy.load_state_dict(state)
    x = rings(4, 3)
    assert torch.allclose(copy.eval().score(x), trained.score(x))


def test_old_spelling_normalize_still_loads(tmp_path) -> None:
    """Runs saved with ``normalize`` (before the house spelling) load; new ones save
    ``normalise`` only."""
    from darklens.models.persistence import load_run, save_run

    with pytest.warns(DeprecationWarning, match="normalise"):
        old = create_detector("infotheoretic", **SMALL, critic="bilinear", normalize=False)
    assert old.config["normalise"] is False and "normalize" not in old.config
    assert old.critic.normalise is False
    save_run(tmp_path / "run", old)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["config"]["normalize"] = config["config"].pop("normalise")  # as an older run has it
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.warns(DeprecationWarning):
        loaded = load_run(tmp_path / "run")
    assert loaded.config["normalise"] is False
