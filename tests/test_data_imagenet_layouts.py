"""ImageNet as it comes: class folders in train/ and val/, or a flat val/ labelled by Kaggle's LOC_val_solution.csv
or by the ILSVRC2012 devkit (ground-truth IDs + meta.mat); a flat val/ without labels is an error naming it; the
eval split defaults to the dataset's validation split. Tiny generated trees, no Ray."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hexray.cli import main
from hexray.config import load_config
from hexray.data.manifest import load_manifest
from hexray.data.sources import folder_source

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: class index = position
DEVKIT_IDS = {"n01440764": 3, "n01443537": 1, "n01484850": 2}  # the devkit's IDs are NOT alphabetical
VAL_TRUTH = ["n01484850", "n01440764", "n01443537", "n01440764", "n01484850"]  # val image k+1's class


def _jpeg(color: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), color, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _tree(root: Path, *, flat_val: bool) -> Path:
    """root/ILSVRC/Data/CLS-LOC/{train/<wnid>/*.JPEG, val/...}, the Kaggle layout; returns the CLS-LOC folder."""
    tree = root / "ILSVRC" / "Data" / "CLS-LOC"
    for i, wnid in enumerate(WNIDS):
        (tree / "train" / wnid).mkdir(parents=True)
        for j in range(3):
            (tree / "train" / wnid / f"{wnid}_{j}.JPEG").write_bytes(_jpeg(40 * i + j))
    for k, wnid in enumerate(VAL_TRUTH, start=1):
        folder = tree / "val" if flat_val else tree / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes(_jpeg(10 * k))
    return tree


def _val_labels(tree: Path) -> list[int]:
    val = next(s for s in folder_source(tree).splits if s.name == "val")
    by_name = {Path(p).name: int(label) for p, label in zip(val.paths, val.labels, strict=True)}
    return [by_name[f"ILSVRC2012_val_{k:08d}.JPEG"] for k in range(1, len(VAL_TRUTH) + 1)]


EXPECTED = [WNIDS.index(w) for w in VAL_TRUTH]


def test_class_folder_val(tmp_path):
    assert _val_labels(_tree(tmp_path, flat_val=False)) == EXPECTED


def test_flat_val_with_kaggle_loc_solution(tmp_path):
    tree = _tree(tmp_path, flat_val=True)
    rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 3 4 {w} 5 6 7 8" for k, w in enumerate(VAL_TRUTH, start=1)]
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
    assert _val_labels(tree) == EXPECTED


def test_flat_val_with_devkit_ground_truth_and_meta_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    tree = _tree(tmp_path, flat_val=True)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{DEVKIT_IDS[w]}\n" for w in VAL_TRUTH))
    synsets = np.zeros(4, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, (wnid, ident) in enumerate([*DEVKIT_IDS.items(), ("n00000000", 4)]):
        synsets[i] = (ident, wnid, 0 if i < 3 else 2)  # the 4th is an inner node: not a class
    scipy_io.savemat(data / "meta.mat", {"synsets": synsets})
    assert _val_labels(tree) == EXPECTED


def test_flat_val_without_labels_is_an_error_naming_the_folder(tmp_path):
    tree = _tree(tmp_path, flat_val=True)
    with pytest.raises(FileNotFoundError, match=r"CLS-LOC/val holds images directly.*LOC_val_solution.csv"):
        folder_source(tree)
    solution = tmp_path / "LOC_val_solution.csv"
    solution.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n09999999 1\n")
    with pytest.raises(ValueError, match="labels ILSVRC2012_val_00000001.JPEG as 'n09999999', which is not a class"):
        folder_source(tree)
    solution.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{VAL_TRUTH[0]} 1\n")
    with pytest.raises(ValueError, match="no label for ILSVRC2012_val_00000002.JPEG"):
        folder_source(tree)


def test_shard_cli_writes_the_val_split_and_eval_defaults_to_it(tmp_path):
    tree = _tree(tmp_path, flat_val=True)
    rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 3 4" for k, w in enumerate(VAL_TRUTH, start=1)]
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    out = tmp_path / "shards"
    assert main(["shard", str(tree), str(out), "--workers", "1", "--min-shards", "1", "--no-progress"]) == 0
    manifest = load_manifest(str(out))
    assert sorted(manifest.splits) == ["train", "val"] and manifest.split("val").count == len(VAL_TRUTH)
    assert manifest.split("val").class_counts == [2, 1, 2]
    cfg = load_config(None, [f"data.root={out}"])
    assert cfg.data.eval_split is None and cfg.data.validation_split(manifest.splits) == "val"
    assert cfg.data.validation_split({"train": 0, "test": 0}) == "test"
    with pytest.raises(ValueError, match="no val/validation/test split"):
        cfg.data.validation_split({"train": 0})
