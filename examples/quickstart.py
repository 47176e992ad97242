# %% [markdown]
# # darklens quickstart
#
# Simulate strong-lensing images of three classes, train an anomaly detector on the images
# without substructure only, score held-out images, and look at the ROC curve and at the most
# and least anomalous lenses. About a minute on a laptop CPU.
#
# `examples/quickstart.ipynb` is this file as a notebook (`python tests/api/test_quickstart.py`
# writes it; that test checks the two agree and runs both).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

import darklens as dl

# The test suite sets DARKLENS_QUICKSTART_SMALL=1 for a seconds-long run of the same steps.
SMALL = os.environ.get("DARKLENS_QUICKSTART_SMALL") == "1"
N_PER_CLASS = 40 if SMALL else 400
EPOCHS = 1 if SMALL else 25
OUT = Path(os.environ.get("DARKLENS_QUICKSTART_OUT", "runs/quickstart"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Simulate
# `n_per_class` images of each class (`no_sub`, `cdm`, `vortex`) of the `demo` preset:
# 64x64 pixels, every image a pure function of the seed.

# %%
data = dl.simulate("demo", N_PER_CLASS, seed=0)
print(data.images.shape, data.class_names)

# %% [markdown]
# ## Train on normal images only
# The detector sees only `no_sub` images: 70% of them train, 10% stop training early, and
# 20% are held out with two thirds of the anomalies as the test set (the split of
# `darklens train`, from the seed).

# %%
detector = dl.create_detector("dcae", latent_dim=64)
detector.fit(data, epochs=EPOCHS, test_fraction=0.2, seed=0)
print(detector, "-", detector.result.epochs_run, "epochs")

# %% [markdown]
# ## Score the held-out test images
# Higher scores mean more anomalous. AUROC is the probability that a random anomalous image
# scores above a random normal one (0.5: chance, 1: perfect).

# %%
test = data.select(detector.split.test)
scores = detector.score(test)
normal = test.labels == test.class_names.index("no_sub")
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for name in ("cdm", "vortex"):
    keep = normal | (test.labels == test.class_names.index(name))
    truth = ~normal[keep]
    auroc = roc_auc_score(truth, scores[keep])
    fpr, tpr, _ = roc_curve(truth, scores[keep])
    ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})")
    print(f"{name}: AUROC {auroc:.3f} on {int((~normal[keep]).sum())} anomalous and "
          f"{int(normal.sum())} normal test images")
ax.plot([0, 1], [0, 1], ":", color="grey")
ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, held-out test")
ax.legend(loc="lower right")
fig.savefig(OUT / "roc.png", dpi=100)

# %% [markdown]
# ## The most and the least anomalous test images

# %%
order = np.argsort(scores)
picks = {"least anomalous": order[:6], "most anomalous": order[::-1][:6]}
fig, axes = plt.subplots(2, 6, figsize=(12, 4.6))
for row, (title, idx) in zip(axes, picks.items(), strict=True):
    for ax, i in zip(row, idx, strict=True):
        ax.imshow(test.images[i, 0], cmap="inferno", origin="lower")
        ax.set_title(f"{test.class_names[test.labels[i]]}\nscore {scores[i]:.4f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(title)
fig.tight_layout()
fig.savefig(OUT / "gallery.png", dpi=100)
print(f"figures in {OUT}")
