"""`hexray export RUN_DIR OUT.pt`: the pretrained backbone's state dict, loadable into the plain model.

For resnet18/resnet50 the keys are torchvision's (load with `strict=True` into `torchvision.models.resnetXX()`
after deleting `fc.weight`/`fc.bias`, or with `strict=False` keeping its fresh fc); with `backbone.small_stem`
the conv1 shape differs (3×3): build the same stem first, e.g. `hexray.models.build_backbone`. For `convnet` the
keys are hexray's convnet's.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a run's backbone weights (torchvision-compatible)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="run directory or one checkpoint directory (local or s3://, gs://)")
    parser.add_argument("out", help="output .pt file (a state dict; local or a URI)")
    parser.set_defaults(func=_run)


def export_backbone(run_dir: str, out: str) -> dict:
    """Save the backbone state dict of the run's latest checkpoint to `out`; returns a small description."""

    from hexray.checkpoint import restore_method

    method, cfg, epoch = restore_method(run_dir)
    from hexray import storage

    state = {k: v.detach().cpu().clone() for k, v in method.backbone.state_dict().items()}
    storage.torch_save(state, out)  # a local file or a URI (s3://bucket/weights.pt)
    return {"backbone": cfg.backbone.name, "epoch": epoch, "tensors": len(state)}


def _run(args: argparse.Namespace) -> int:
    info = export_backbone(args.run_dir, args.out)
    print(f"wrote {args.out}: {info['backbone']} backbone after epoch {info['epoch']} ({info['tensors']} tensors)")
    return 0
