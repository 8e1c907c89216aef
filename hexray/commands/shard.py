"""`hexray shard SRC OUT`: write Parquet shards + manifest.json from IDX files, an ImageFolder tree or a generator."""

from __future__ import annotations

import argparse
import sys

from hexray.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "shard", help="write Parquet shards + manifest.json from images",
        description="SRC: a directory of IDX files (train-images-idx3-ubyte[.gz], ...), an ImageFolder tree "
                    "(SRC/<split>/<class>/<image> or SRC/<class>/<image>), or `synthetic-hierarchy`. "
                    "Re-running skips shards already written (verified by checksum).",
    )
    parser.add_argument("src", metavar="SRC", help="the images to shard (see above)")
    parser.add_argument("out", metavar="OUT", help="output directory (shards and manifest.json)")
    parser.add_argument("--source", choices=["auto", "idx", "folder", "synthetic-hierarchy"], default="auto",
                        help="what SRC is; auto: synthetic-hierarchy by name, IDX files if present, else a folder")
    parser.add_argument("--hierarchy", metavar="FILE", help="class→superclass map (CSV `class,superclass` or JSON)")
    parser.add_argument("--class-names", metavar="A,B,...", help="class names for IDX labels 0..K-1")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="ImageFolder decode mode")
    parser.add_argument("--shard-size-mb", type=float, default=128.0, help="target shard size")
    parser.add_argument("--min-shards", type=int, default=8, help="at least this many shards per split")
    parser.add_argument("--workers", type=int, default=None, help="processes (None: all cores)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="synthetic-hierarchy option, e.g. seed=0, images_per_class=100 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)


def _options(pairs: list[str]) -> dict:
    from hexray.config.yaml_io import parse_yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option must be KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_yaml(value, f"--option {key}")
    return out


def _run(args: argparse.Namespace) -> int:
    from hexray.data.hierarchy import load_hierarchy
    from hexray.data.sources import folder_source, idx_source, is_idx_dir, synthetic_source
    from hexray.data.synthetic import SyntheticSpec
    from hexray.data.writer import write_shards

    kind = args.source
    if kind == "auto":
        kind = "synthetic-hierarchy" if args.src == "synthetic-hierarchy" else "idx" if is_idx_dir(args.src) \
            else "folder"
    if args.option and kind != "synthetic-hierarchy":
        raise InputError("--option only applies to SRC synthetic-hierarchy")
    if kind == "idx":
        names = args.class_names.split(",") if args.class_names else None
        source = idx_source(args.src, names)
    elif kind == "folder":
        source = folder_source(args.src, channels=args.channels)
    else:
        try:
            source = synthetic_source(SyntheticSpec(**_options(args.option)))
        except TypeError as err:
            raise InputError(f"unknown synthetic-hierarchy option: {err}") from err
    if args.hierarchy:
        source.superclass_names, source.class_to_superclass = load_hierarchy(args.hierarchy, source.class_names)
        source.description = {**source.description, "hierarchy": args.hierarchy}
    manifest = write_shards(source, args.out, shard_mb=args.shard_size_mb, min_shards=args.min_shards,
                            workers=args.workers, progress=not args.no_progress)
    counts = ", ".join(f"{k}: {v.count} images in {len(v.shards)} shards" for k, v in manifest.splits.items())
    print(f"wrote {args.out}/manifest.json ({len(manifest.class_names)} classes"
          f"{', ' + str(len(manifest.superclass_names)) + ' superclasses' if manifest.superclass_names else ''}; "
          f"{counts})")
    for name, split in manifest.splits.items():
        if split.corrupt:
            shown = ", ".join(split.corrupt_examples[:5])
            more = f" and {split.corrupt - 5} more (manifest.json lists {len(split.corrupt_examples)})" \
                if split.corrupt > 5 else ""
            print(f"{name}: {split.corrupt} corrupt image file(s) left out: {shown}{more}", file=sys.stderr)
    check = manifest.source.get("raw_pixel_neighbours")
    if check:
        print(f"hierarchy check: an image's {check['k']} nearest raw-pixel neighbours (cosine, {check['images']} "
              f"training images) share its superclass {100 * check['superclass']:.1f}% of the time (chance "
              f"{100 * check['chance_superclass']:.1f}%) and its class {100 * check['class']:.1f}% (chance "
              f"{100 * check['chance_class']:.1f}%); generator parameters: manifest.json `source`")
    return 0
