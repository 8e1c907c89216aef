"""Labels for ImageNet's flat `val/` folder (50 000 JPEGs in one directory, no class sub-folders).

ImageNet ships its validation labels outside the images, in one of two forms; both are read here:
- Kaggle / LOC: `LOC_val_solution.csv`, rows `ImageId,PredictionString` whose first token is the WNID
  (`ILSVRC2012_val_00000001,n01751748 12 34 56 78 ...`).
- The ILSVRC2012 devkit: `data/ILSVRC2012_validation_ground_truth.txt`, one ILSVRC2012_ID per line for the images
  in name order, plus `data/meta.mat` mapping those IDs (1..1000, NOT alphabetical) to WNIDs (read with scipy).
The files are looked for in the image tree's root and up to three folders above it (Kaggle puts the CSV three
levels above `ILSVRC/Data/CLS-LOC`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from hexray.errors import DataError

LOC_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"


def _candidates(root: Path) -> list[Path]:
    return [root, *list(root.resolve().parents)[:3]]


def _find(root: Path, *relative: str) -> Path | None:
    for folder in _candidates(root):
        for rel in relative:
            if (folder / rel).is_file():
                return folder / rel
    return None


def _loc_solution(path: Path) -> dict[str, str]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            tokens = (row.get("PredictionString") or "").split()
            if row.get("ImageId") and tokens:
                out[row["ImageId"]] = tokens[0]
    if not out:
        raise DataError(f"{path}: no `ImageId,PredictionString` rows")
    return out


def _devkit_id_to_wnid(meta: Path) -> dict[int, str]:
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError(f"reading the ImageNet devkit's {meta} needs scipy: pip install scipy "
                          f"(or use Kaggle's {LOC_SOLUTION})") from err
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}


def _devkit(truth: Path, files: list[Path]) -> dict[str, str]:
    meta = next((p for p in (truth.parent / "meta.mat", truth.parent.parent / "data" / "meta.mat") if p.is_file()),
                None)
    if meta is None:
        raise FileNotFoundError(f"{truth} needs the devkit's meta.mat next to it (ILSVRC2012_ID → WNID)")
    id_to_wnid = _devkit_id_to_wnid(meta)
    ids = [int(line) for line in truth.read_text().split()]
    ordered = sorted(files, key=lambda p: p.name)
    if len(ids) != len(ordered):
        raise DataError(f"{truth} has {len(ids)} labels but the flat val folder holds {len(ordered)} images")
    return {p.stem: id_to_wnid[i] for p, i in zip(ordered, ids, strict=True)}


def flat_val_labels(root: Path, split_dir: Path, files: list[Path], class_names: list[str]) -> list[int]:
    """Class index (into `class_names`, the train split's WNID folders) of each image in `files`."""
    solution = _find(root, LOC_SOLUTION)
    truth = _find(root, DEVKIT_TRUTH, f"{DEVKIT_DIR}/data/{DEVKIT_TRUTH}", f"data/{DEVKIT_TRUTH}")
    if solution is not None:
        by_image = _loc_solution(solution)
        source = solution
    elif truth is not None:
        by_image = _devkit(truth, files)
        source = truth
    else:
        raise FileNotFoundError(
            f"{split_dir} holds images directly (ImageNet's flat val/) but no labels were found for them: put "
            f"{LOC_SOLUTION} or {DEVKIT_DIR}/data/{DEVKIT_TRUTH} (+ meta.mat) in {root} or a folder above it, "
            f"or sort the images into <class>/ sub-folders")
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for path in files:
        wnid = by_image.get(path.stem)
        if wnid is None:
            raise DataError(f"{source} has no label for {path.name}")
        if wnid not in index:
            raise DataError(f"{source} labels {path.name} as {wnid!r}, which is not a class folder of the train split")
        labels.append(index[wnid])
    return labels
