"""Published files (the Keras weights of every backbone, the ImageNet class index): where
they live, download with resume, and md5 check.

The manifest is the package file `minitl/resources/weights_manifest.json`:
name -> file, url, mirrors, bytes, md5, description; or name -> {"alias": other name}.
`bytes` is null where the publisher gives no size (the download then checks the
length the server announces) and `md5` is null where it gives no checksum (Keras'
MobileNetV2 files): such a file is downloaded but cannot be verified, and
`is_verifiable` says so.

Folder for the files (`weights_dir`), first that applies:
1. the `directory` argument (the CLI's `--dir`);
2. `$MINITL_HOME/weights` when MINITL_HOME is set;
3. the repository's `weights/` folder, when minitl runs from a checkout;
4. `~/.minitl/weights`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from minitl.errors import DownloadError
from minitl.files import file_digest, hash_file

__all__ = ["MANIFEST", "WeightsRow", "fetch", "file_md5", "file_name", "is_verifiable", "list_weights", "weights_dir"]

MANIFEST_PATH = Path(__file__).resolve().parent / "resources" / "weights_manifest.json"
CHUNK = 1 << 20
USER_AGENT = "minitl"


def _load_manifest(path: Path = MANIFEST_PATH) -> dict:
    with open(path, encoding="utf8") as f:
        return json.load(f)


MANIFEST: dict = _load_manifest()


def weights_dir(directory=None) -> Path:
    """The folder for downloaded files (see the module docstring for the order)."""
    if directory is not None:
        return Path(directory).expanduser()
    home = os.environ.get("MINITL_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    repo = Path(__file__).resolve().parent.parent
    if (repo / "weights" / "README.md").is_file() and (repo / "setup.cfg").is_file():
        return repo / "weights"
    return Path.home() / ".minitl" / "weights"


def file_md5(path) -> str:
    return file_digest(path, "md5")


def _entry(name: str, manifest) -> dict:
    manifest = MANIFEST if manifest is None else manifest
    if name not in manifest:
        raise DownloadError(f"unknown file '{name}'; known: {', '.join(sorted(manifest))}")
    entry = manifest[name]
    if "alias" in entry:
        return _entry(entry["alias"], manifest)
    return entry


def file_name(name, manifest=None) -> str:
    """The file that `fetch(name)` writes, e.g. 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'."""
    return _entry(name, manifest)["file"]


def is_verifiable(name, manifest=None) -> bool:
    """Whether the manifest has an md5 for `name`, so that a download can be checked."""
    return _entry(name, manifest).get("md5") is not None


def _is_good(path: Path, size, md5) -> bool:
    """Present with the right size and md5 (each checked when the manifest gives it)."""
    return (path.is_file() and (size is None or path.stat().st_size == size)
            and (md5 is None or file_md5(path) == md5))


def fetch(name, directory=None, progress=True, url=None, manifest=None, timeout=60.0) -> Path:
    """Download the manifest entry `name` into `weights_dir(directory)`; return its path.

    A file already there with the right size and md5 is not downloaded
    again (without an md5 in the manifest, a file there is taken as it is:
    check `is_verifiable(name)` before calling it verified). The download goes to
    `<file>.part` and resumes from it with an HTTP Range request (or restarts when the server ignores Range); the
    final name appears only after size and md5 match. A broken connection
    keeps the `.part` for the next try; a wrong md5 deletes it.

    `url` replaces the manifest's URLs: a full URL, or a base ending in
    '/' to which the file name is added. `manifest` replaces the packaged
    manifest (a dict name -> {file, url, bytes, md5}).
    """
    entry = _entry(name, manifest)
    size = None if entry.get("bytes") is None else int(entry["bytes"])
    md5 = None if entry.get("md5") is None else entry["md5"].lower()
    filename = entry["file"]
    folder = weights_dir(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the folder {folder} ({e})") from e
    dest = folder / filename
    if _is_good(dest, size, md5):
        return dest
    if url is not None:
        urls = [url + filename if url.endswith("/") else url]
    else:
        urls = [entry["url"], *entry.get("mirrors", [])]
    errors = []
    for u in urls:
        try:
            _download(u, dest, size, md5, progress, timeout)
            return dest
        except DownloadError as e:
            errors.append(str(e))
        except OSError as e:  # writing the file, not the network
            raise DownloadError(f"{dest}: cannot write the download ({e})") from e
    if len(errors) == 1:
        raise DownloadError(errors[0])
    raise DownloadError("every URL failed:\n  " + "\n  ".join(errors))


def _download(url: str, dest: Path, size, md5, progress: bool, timeout: float):
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):  # the second attempt restarts from zero
        offset = part.stat().st_size if part.is_file() else 0
        if (size is not None and offset > size) or attempt:
            _unlink(part)
            offset = 0
        if size is not None and offset == size:  # a finished .part that was never renamed
            found = file_md5(part)
            if md5 is not None and found != md5:
                continue
        else:
            found = _stream(url, part, offset, size, progress, timeout, dest.name)
            if found is None:
                continue  # the server refused the range
        if md5 is not None and found != md5:
            _unlink(part)
            raise DownloadError(
                f"{dest.name}: checksum mismatch (expected md5 {md5}, found {found}); "
                f"the download from {url} was deleted"
            )
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        return
    raise DownloadError(f"{url}: the server refused the download twice")


def _stream(url, part: Path, offset: int, size, progress, timeout, label):
    """Write the file from `offset` on into `part`; return the md5 of the whole
    file, or None when the server refused the range. With `size` None the
    expected size is what the server announces (Content-Length), if it does."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return None
        raise DownloadError(f"{url}: HTTP error {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason})") from e
    with resp:
        if resp.status == 206 and offset:
            if _range_start(resp.headers.get("Content-Range", "")) != offset:
                return None
        elif resp.status == 200:
            offset = 0  # no range asked, or the server ignored it: start over
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {resp.status}")
        if size is None:
            length = resp.headers.get("Content-Length")
            size = offset + int(length) if length and length.isdigit() else None
        h = hash_file(part, "md5") if offset else hashlib.md5()
        got = offset
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=size,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar,
        ):
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    _flush(out)
                    raise DownloadError(
                        f"{url}: the connection broke after {got} of {size} bytes ({e!r}); "
                        f"{part} is kept, run again to resume"
                    ) from e
                if not chunk:
                    break
                got += len(chunk)
                if size is not None and got > size:
                    break
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            _flush(out)
    if size is not None and got > size:
        _unlink(part)
        raise DownloadError(f"{url}: the server sent more than the expected {size} bytes")
    if size is not None and got < size:
        raise DownloadError(f"{url}: incomplete download, {got} of {size} bytes; {part} is kept, run again to resume")
    return h.hexdigest()


def _range_start(content_range: str):
    m = re.match(r"bytes\s+(\d+)-", content_range)
    return int(m.group(1)) if m else None


def _flush(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass
class WeightsRow:
    """One line of `minitl weights list`.

    status: 'missing', 'partial' (a .part from a broken download),
    'present' (right size, md5 not checked), 'verified' (md5 checked),
    'unverified' (asked to verify, but the manifest has no md5 for it) or
    'corrupt' (wrong size or md5). `bytes`: the published size, else the
    present file's, else None.
    """

    name: str
    file: str
    bytes: int | None
    path: Path
    status: str


def list_weights(directory=None, verify=False, manifest=None) -> list[WeightsRow]:
    """The state of every manifest entry in `weights_dir(directory)`."""
    manifest = MANIFEST if manifest is None else manifest
    folder = weights_dir(directory)
    rows = []
    for name, entry in manifest.items():
        if "alias" in entry:
            continue
        size = None if entry.get("bytes") is None else int(entry["bytes"])
        path = folder / entry["file"]
        if path.is_file():
            if size is None:
                size = path.stat().st_size
            elif path.stat().st_size != size:
                rows.append(WeightsRow(name, entry["file"], size, path, "corrupt"))
                continue
            if not verify:
                status = "present"
            elif entry.get("md5") is None:
                status = "unverified"
            else:
                status = "verified" if file_md5(path) == entry["md5"].lower() else "corrupt"
        elif path.with_name(path.name + ".part").is_file():
            status = "partial"
        else:
            status = "missing"
        rows.append(WeightsRow(name, entry["file"], size, path, status))
    return rows
