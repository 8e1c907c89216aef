"""One place that turns a location — a local path, `file://`, `s3://`, `gs://` or any URI pyarrow knows — into a
pyarrow filesystem, and the few operations hexray needs on it.

Why: on a cluster the nodes share no disk, so shards, run directories and checkpoints may live on object storage.
Everything that reads or writes them goes through here with the location kept as given (a URI stays a URI; no
local path is derived from it by string-munging). Endpoints and credentials come from the standard environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ~/.aws/..., GOOGLE_APPLICATION_CREDENTIALS) through pyarrow.
Object stores have no append and no rename: writes replace whole objects (S3 PUTs are atomic); local writes go
to a temporary name first and are renamed, so a reader never sees half a file either way.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from hexray.errors import InputError

__all__ = [
    "StoragePath", "basename", "display", "exists", "is_dir", "is_file", "is_remote",
    "join", "list_dir", "make_dirs", "normalize", "parent", "read_bytes", "read_text", "resolve",
    "torch_load", "torch_save", "write_bytes", "write_figure", "write_text",
]


def is_remote(location: str) -> bool:
    """True for a URI with a scheme other than file:// (object storage: no local path exists)."""
    scheme = urlsplit(str(location)).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive, not a scheme


def normalize(location: str) -> str:
    """A URI unchanged (without a trailing slash); a local path absolute with ~ expanded (Ray needs that)."""
    location = str(location)
    if "://" in location:
        return location.rstrip("/") if not location.endswith("://") else location
    return os.path.abspath(os.path.expanduser(location))


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for `location`."""
    location = normalize(location)
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"cannot open {location}: {err}") from err
    return pafs.LocalFileSystem(), location


def join(location: str, *parts: str) -> str:
    """`location/part/...` for a path or a URI (URIs keep their scheme and use '/')."""
    location = str(location)
    if "://" in location:
        return posixpath.join(location.rstrip("/"), *(p.strip("/") for p in parts))
    return os.path.join(location, *parts)


def parent(location: str) -> str:
    location = normalize(location)
    if "://" in location:
        scheme, rest = location.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return os.path.dirname(location)


def basename(location: str) -> str:
    return posixpath.basename(normalize(location).rstrip("/"))


def display(location: str) -> str:
    """How a location is shown to the user: URIs as given, local paths absolute."""
    return normalize(location)


def _info(location: str) -> pafs.FileInfo:
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: str) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """A directory, or on object storage a prefix that holds at least one object."""
    return _info(location).type == pafs.FileType.Directory


def list_dir(location: str) -> list[tuple[str, bool]]:
    """(name, is_directory) of the entries directly under `location` ([] when it does not exist)."""
    fs, path = resolve(location)
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted((posixpath.basename(e.path.rstrip("/")), e.type == pafs.FileType.Directory) for e in entries)


def make_dirs(location: str) -> None:
    """Create a local directory (and parents); a no-op on object storage, where prefixes need no creation."""
    fs, path = resolve(location)
    if not is_remote(location):
        _create_local_dir(fs, path)


def _create_local_dir(fs: pafs.FileSystem, path: str) -> None:
    """`create_dir` whose failure names the real culprit: a file where a folder of `path` should be."""
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip(os.sep)) if probe != os.sep else ""
    if probe and not os.path.isdir(probe):
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of a folder", probe)
    try:
        fs.create_dir(path, recursive=True)
    except OSError as err:
        raise _naming(err, path) from err


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{display(location)} does not exist") from err


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")




def write_bytes(location: str, data: bytes) -> None:
    """Replace `location` with `data`, all or nothing. A failed write (a full disk, no permission) leaves no
    partial file behind and raises an OSError naming `location`."""
    fs, path = resolve(location)
    try:
        if is_remote(location):
            with fs.open_output_stream(path) as f:
                f.write(data)
            return
        if os.path.exists(path) and not os.path.isfile(path):  # a device or pipe: write through, never replace it
            with open(path, "wb") as f:
                f.write(data)
            return
        _create_local_dir(fs, os.path.dirname(path))
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as err:
        if err.filename and ".tmp-" not in str(err.filename):
            raise  # already names its path (a file in the way of a folder)
        raise _naming(err, location) from err


def _naming(err: OSError, location: str) -> OSError:
    """The same failure as an OSError whose reason is the OS's words and whose filename is `location` (pyarrow's
    messages name temporary paths and bury the errno in their text)."""
    code = err.errno
    if code is None:
        found = re.search(r"\[errno (\d+)\]", str(err))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else str(err)
    return OSError(code or 0, reason, location)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))






def write_figure(fig: Any, location: str | StoragePath, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG at any location (rendered in memory, then written whole)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes(str(location), buf.getvalue())


def torch_load(location: str, **kwargs: Any) -> Any:
    """`torch.load` of a file at any location (object storage: read into memory first)."""
    import torch

    if not is_remote(location):
        return torch.load(normalize(location), **kwargs)
    return torch.load(io.BytesIO(read_bytes(location)), **kwargs)


def torch_save(obj: Any, location: str) -> None:
    """`torch.save` to any location, atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(location, buf.getvalue())


class StoragePath:
    """The subset of `pathlib.Path` that run-directory code uses, for a local path or a URI alike.

    Why: evaluation and reports walk run directories (`run / "config.yaml"`, `.is_file()`, `.read_text()`);
    with this they read and write them on object storage unchanged. It deliberately has no `__fspath__`:
    a URI never silently becomes a local path.
    """

    __slots__ = ("location",)

    def __init__(self, location: str | os.PathLike | StoragePath) -> None:
        raw = location.location if isinstance(location, StoragePath) else os.fspath(location)
        self.location = normalize(str(raw))

    def __truediv__(self, part: str | os.PathLike) -> StoragePath:
        return StoragePath(join(self.location, os.fspath(part)))

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"StoragePath({self.location!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoragePath) and other.location == self.location

    def __hash__(self) -> int:
        return hash(self.location)

    def __lt__(self, other: StoragePath) -> bool:
        return self.location < other.location

    @property
    def name(self) -> str:
        return basename(self.location)

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name

    @property
    def parent(self) -> StoragePath:
        return StoragePath(parent(self.location))

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    def exists(self) -> bool:
        return exists(self.location)

    def is_file(self) -> bool:
        return is_file(self.location)

    def is_dir(self) -> bool:
        return is_dir(self.location)

    def iterdir(self) -> list[StoragePath]:
        return [self / name for name, _ in list_dir(self.location)]

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        make_dirs(self.location)

    def size(self) -> int:
        return int(_info(self.location).size or 0)

    def read_bytes(self) -> bytes:
        return read_bytes(self.location)

    def read_text(self, encoding: str = "utf-8") -> str:
        return read_bytes(self.location).decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        write_bytes(self.location, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        write_bytes(self.location, text.encode(encoding))

    def relative_to(self, other: StoragePath) -> str:
        """This location relative to `other`, '/'-separated (for links inside reports)."""
        base = other.location.rstrip("/") + "/"
        if not self.location.startswith(base):
            raise ValueError(f"{self.location} is not under {other.location}")
        return self.location[len(base):].replace(os.sep, "/")
