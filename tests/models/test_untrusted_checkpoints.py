"""Checkpoints from strangers: a pickle payload that would write a file is refused, never run.

Every loader of user-supplied weights or checkpoints is covered: detector runs (``load_run``,
``darklens evaluate`` and ``darklens score``), the training checkpoint read by ``--resume``
(``darklens.train.loop.load_checkpoint``, ``darklens train --resume``), and regression runs
(``load_regression_run``, ``darklens regress predict``, ``darklens regress train --resume``).
A negative control shows that each crafted file really writes its target when unpickled the
unsafe way, so the "target never appears" checks can fail.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

from darklens.cli import main
from darklens.data.formats import write_deeplense_folder, write_shard
from darklens.data.npy_safe import save_npy
from darklens.errors import CheckpointError, DarklensError
from darklens.models.base import create_detector
from darklens.models.persistence import WEIGHTS, load_run, save_run
from darklens.models.regression_persistence import RUN_JSON, load_regression_run
from darklens.models.regressor import Regressor
from darklens.train.loop import CHECKPOINT, load_checkpoint
from toy_lenses import toy_lensdata

SIZE = 32


class _OpenForWriting:
    """Unpickles to ``open(target, "w")``: creates the file."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


class _Touch:
    """Unpickles to ``pathlib.Path(target).touch()``: creates the file."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


PAYLOADS = [_OpenForWriting, _Touch]


def _craft(path: pathlib.Path, payload: type, target: pathlib.Path, kind: str) -> None:
    """A file shaped like a real one of ``kind`` with the payload hidden inside."""
    evil = payload(target)
    if kind == "weights":  # a state_dict with one poisoned entry
        obj = {"encoder.weight": torch.zeros(2), "bank": evil}
    else:  # a training checkpoint with a poisoned history row
        obj = {"detector": "dcae", "epoch": 1, "model": {}, "history": [{"epoch": 1.0}, evil]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data = toy_lensdata(6, size=SIZE, seed=0)
    write_deeplense_folder(root / "folder", data)
    data.metadata["theta_e"] = (1.0 + 0.01 * torch.arange(len(data)).numpy()).astype("float32")
    write_shard(root / "shard.h5", data)
    save_npy(root / "one.npy", data.images[0, 0])
    return root


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("kind", ["weights", "checkpoint"])
def test_negative_control_the_payload_really_writes(tmp_path, payload, kind):
    target = tmp_path / "pwned"
    _craft(tmp_path / "evil.pt", payload, target, kind)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the unsafe way
    assert target.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_detector_run_weights_are_refused(tmp_path, data_dir, capsys, payload):
    run = save_run(tmp_path / "run", create_detector("dcae", image_size=SIZE))
    target = tmp_path / "pwned"
    _craft(run / WEIGHTS, payload, target, "weights")
    with pytest.raises(CheckpointError, match=r"weights\.pt: cannot be loaded safely"):
        load_run(run)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data_dir / "folder")]) == 2
    assert main(["score", str(run), str(data_dir / "one.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("cannot be loaded safely" in line for line in err), err
    assert err[0].startswith("darklens evaluate: error: ") and "Traceback" not in err[0]
    assert err[1].startswith("darklens score: error: ")
    assert not target.exists()
    assert not (run / "metrics.json").exists()  # nothing written from a refused run


@pytest.mark.parametrize("payload", PAYLOADS)
def test_training_checkpoint_for_resume_is_refused(tmp_path, data_dir, capsys, payload):
    out = tmp_path / "run"
    target = tmp_path / "pwned"
    _craft(out / CHECKPOINT, payload, target, "checkpoint")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(out / CHECKPOINT)
    capsys.readouterr()
    assert main(["train", "--detector", "dcae", "--data", str(data_dir / "folder"),
                 "--out", str(out), "--epochs", "1", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens train: error: ")
    assert "cannot be loaded safely" in err[0]
    assert not target.exists()
    assert not (out / "weights.pt").exists() and not (out / "config.json").exists()


def _regression_run(run: pathlib.Path) -> None:
    """A regression run directory as ``darklens regress train`` lays it out (one member)."""
    import json

    model = Regressor(["theta_e"], "small")
    run.mkdir(parents=True)
    (run / RUN_JSON).write_text(json.dumps({
        "targets": ["theta_e"], "model": model.config, "normaliser": {"mode": "none"},
        "members": [{}], "image_shape": [SIZE, SIZE]}))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_regression_run_weights_are_refused(tmp_path, data_dir, capsys, payload):
    run = tmp_path / "reg"
    _regression_run(run)
    target = tmp_path / "pwned"
    _craft(run / "member-0" / "weights.pt", payload, target, "weights")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_regression_run(run)
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(data_dir / "one.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens regress: error: ")
    assert "cannot be loaded safely" in err[0]
    assert not target.exists()


def test_regression_checkpoint_for_resume_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "reg"
    target = tmp_path / "pwned"
    _craft(out / "member-0" / "checkpoint.pt", _OpenForWriting, target, "checkpoint")
    capsys.readouterr()
    code = main(["regress", "train", "--target", "theta_e", "--data", str(data_dir / "shard.h5"),
                 "--out", str(out), "--epochs", "1", "--resume", "--classes", "no_sub,cdm"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("darklens regress: error: ")]
    assert len(err) == 1 and "cannot be loaded safely" in err[0]
    assert not target.exists()
    assert not (out / "member-0" / "weights.pt").exists()


def test_errors_are_user_facing():
    assert issubclass(CheckpointError, DarklensError)  # the CLI turns them into exit code 2
