"""Download HAM10000 from the Harvard Dataverse and unpack it in its official layout."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from .._utils._progress import progress
from .._utils._sklearn import validate_params
from ._base import get_data_home
from ._ham10000 import load_ham10000

__all__ = ["fetch_ham10000"]

#: Persistent identifier of the dataset (version 4.0 is the one pinned below).
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
HAM10000_URL = "https://doi.org/10.7910/DVN/DBW86T"

#: Dataverse "access" API; a file is served at ``<base>/<file id>``.
DEFAULT_BASE_URL = "https://dataverse.harvard.edu/api/access/datafile/"

#: Environment variable that overrides :data:`DEFAULT_BASE_URL` (e.g. a mirror).
BASE_URL_ENV = "SKINFUSE_HAM10000_URL"

#: Name of the file, inside the dataset folder, that records what was fetched.
MARKER_NAME = ".skinfuse_fetch.json"

_CHUNK_SIZE = 1 << 20  # 1 MiB
_TIMEOUT_S = 60  # per socket operation, not for the whole download
# Dataverse has been reported to answer urllib's default User-Agent with 403.
_USER_AGENT = f"skinfuse (+{HAM10000_URL})"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote dataset.

    Parameters
    ----------
    filename : str
        Name the downloaded file gets on disk.
    url_path : str
        Path of the file relative to the base URL.
    checksum : str
        ``"<hashlib algorithm>:<hex digest>"`` of the downloaded bytes,
        e.g. ``"md5:0123..."``.
    """

    filename: str
    url_path: str
    checksum: str

    @property
    def target(self) -> str:
        """Name of what the file becomes once in place: a zip's folder, else the file."""
        return self.filename[: -len(".zip")] if self.filename.endswith(".zip") else self.filename


# Harvard Dataverse, dataset version 4.0: (file name on disk, Dataverse file id,
# MD5 that Dataverse publishes for the file). Not re-verified from this machine
# (no network here); ids and digests agree across several independent download
# scripts and data cards that checked them against the Dataverse file pages.
# Sizes: 690,218 B (metadata, original upload), 1,366,522,108 B (part 1),
# 1,403,566,547 B (part 2). Older scripts use file id 3172582 for the metadata
# (an earlier upload of it); version 4.0 lists 4338392, whose original has one
# extra column, ``dataset`` (the source cohort), after the usual seven.
# The metadata is a tabular upload that Dataverse "ingests": by default it
# serves a converted, tab-separated, fully quoted copy (HAM10000_metadata.tab)
# whose bytes do not match the published MD5. ``?format=original`` asks for the
# uploaded comma-separated file, which is the one the MD5 describes.
REMOTE_FILES: tuple[RemoteFile, ...] = (
    RemoteFile(
        "HAM10000_metadata.csv",
        "4338392?format=original",
        "md5:8f85fb1aa29d80a2797247e434deb79d",
    ),
    RemoteFile(
        "HAM10000_images_part_1.zip",
        "3172585",
        "md5:4639bfa73ab251610530a97c898e6e46",
    ),
    RemoteFile(
        "HAM10000_images_part_2.zip",
        "3172584",
        "md5:da43d6cc50f6613013be07e8986b384b",
    ),
)


@validate_params(
    {
        "data_home": [str, os.PathLike, None],
        "download_if_missing": ["boolean"],
        "base_url": [str, None],
        "as_frame": ["boolean"],
        "return_X_y": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def fetch_ham10000(
    data_home=None,
    *,
    download_if_missing: bool = True,
    base_url: str | None = None,
    as_frame: bool = True,
    return_X_y: bool = False,
    verbose: int = 1,
):
    """Download HAM10000 (once) and load it.

    The official archives of the Harvard Dataverse (doi:10.7910/DVN/DBW86T,
    version 4.0, about 2.8 GB) are downloaded, checked against their published
    MD5 digests and unpacked into ``<data_home>/ham10000/`` in the official
    layout::

        HAM10000_metadata.csv
        HAM10000_images_part_1/*.jpg
        HAM10000_images_part_2/*.jpg

    Each file that is complete is recorded in ``.skinfuse_fetch.json`` in that
    folder, so later calls (and a call after an interrupted download) only
    fetch what is missing. The zip archives are deleted once unpacked. Image
    folders already there that lack images listed in the metadata (deleted or
    half copied) are repaired: the image archives are fetched again, one at a
    time, until no listed image is missing.
    The data are then read with :func:`load_ham10000`.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder for skinfuse's datasets; see :func:`get_data_home`. ``None``
        uses ``$SKINFUSE_DATA_HOME`` or else ``~/skinfuse_data``.
    download_if_missing : bool, default=True
        If False, raise an ``OSError`` instead of downloading when the data
        are not already on disk.
    base_url : str, default=None
        URL the files are fetched from (each file is at ``base_url`` + its
        Dataverse file id). ``None`` uses ``$SKINFUSE_HAM10000_URL`` or else
        the Harvard Dataverse access API,
        ``https://dataverse.harvard.edu/api/access/datafile/``.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise
        object ndarrays.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    verbose : int, default=1
        0 prints nothing; 1 or more shows what is downloaded and progress bars.

    Returns
    -------
    data : sklearn.utils.Bunch
        As returned by :func:`load_ham10000`: ``frame``, ``data`` (columns
        ``image_path, age, sex, localization``), ``target`` (``dx``),
        ``groups`` (``lesion_id``, for grouped splitters), ``target_names``,
        ``feature_names`` and ``DESCR`` (with citation and licence).
    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    OSError
        If the data are missing or incomplete and ``download_if_missing`` is
        False, if a download fails or is interrupted (the message says how many
        of the announced bytes arrived), or if a downloaded file does not match
        its checksum (the bad or partial file is deleted; calling again retries).

    Notes
    -----
    HAM10000 is distributed under CC BY-NC 4.0 (non-commercial use only);
    cite Tschandl et al., Scientific Data 5, 180161 (2018).

    Examples
    --------
    Skipped as a doctest: the first call downloads about 2.8 GB from the Harvard
    Dataverse.

    >>> from skinfuse.datasets import fetch_ham10000
    >>> ham = fetch_ham10000()  # doctest: +SKIP
    >>> ham.data.shape, ham.target_names.tolist()  # doctest: +SKIP
    ((10015, 4), ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc'])
    """
    folder = get_data_home(data_home) / "ham10000"
    remote_files = REMOTE_FILES  # read at call time, so tests can swap the table
    marker = _read_marker(folder)
    missing = [rf for rf in remote_files if not _is_in_place(rf, folder, marker)]

    if missing:
        if not download_if_missing:
            names = ", ".join(rf.filename for rf in missing)
            raise OSError(
                f"HAM10000 is not in {folder} (missing: {names}). Call "
                "fetch_ham10000(download_if_missing=True) to download it (about 2.8 GB), "
                f"or download those files from {HAM10000_URL} and place "
                "HAM10000_metadata.csv, HAM10000_images_part_1/ and HAM10000_images_part_2/ "
                "(the unpacked zips) in that folder."
            )
        base = _resolve_base_url(base_url)
        folder.mkdir(parents=True, exist_ok=True)
        for rf in missing:
            _fetch_remote_file(rf, base, folder, verbose=verbose)
            marker[rf.filename] = rf.checksum
            _write_marker(folder, marker)
    else:
        _repair_image_folders(folder, remote_files, marker, download_if_missing, base_url, verbose)

    return load_ham10000(folder, as_frame=as_frame, return_X_y=return_X_y)


def _absent_images(folder: Path, remote_files) -> list[str]:
    """The image ids listed in the metadata whose image is in none of the image folders.

    Empty when the metadata cannot be read (:func:`load_ham10000` then says what is wrong).
    """
    tables = [rf for rf in remote_files if not rf.filename.endswith(".zip")]
    dirs = [folder / rf.target for rf in remote_files if rf.filename.endswith(".zip")]
    try:
        with (folder / tables[0].target).open(newline="", encoding="utf-8") as fh:
            ids = [row.get("image_id") for row in csv.DictReader(fh)]
        present = {os.path.splitext(name)[0] for d in dirs for name in os.listdir(d)}
    except (IndexError, OSError, UnicodeDecodeError, csv.Error):
        return []
    return [i for i in ids if i and i not in present]


def _repair_image_folders(folder, remote_files, marker, download_if_missing, base_url, verbose):
    """Fetch the image archives again, one by one, while images listed in the metadata are
    missing from image folders that are already there (e.g. deleted or half copied)."""
    absent = _absent_images(folder, remote_files)
    if not absent:
        return
    shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
    archives = [rf for rf in remote_files if rf.filename.endswith(".zip")]
    if not download_if_missing:
        raise OSError(
            f"HAM10000 in {folder} is incomplete: {len(absent)} images listed in the "
            f"metadata are missing from {', '.join(rf.target for rf in archives)} ({shown}). "
            "Call fetch_ham10000(download_if_missing=True) to download the image archives "
            "again and repair the folders, or put the missing images there by hand."
        )
    base = _resolve_base_url(base_url)
    for rf in archives:
        if verbose:
            print(
                f"{len(absent)} images listed in the metadata are missing ({shown}); "
                f"fetching {rf.filename} again",
                file=sys.stderr,
            )
        _fetch_remote_file(rf, base, folder, verbose=verbose)
        marker[rf.filename] = rf.checksum
        _write_marker(folder, marker)
        absent = _absent_images(folder, remote_files)
        if not absent:
            return


def _resolve_base_url(base_url: str | None) -> str:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return str(base_url)


def _join_url(base: str, url_path: str) -> str:
    return base.rstrip("/") + "/" + url_path.lstrip("/")


def _read_marker(folder: Path) -> dict[str, str]:
    """Return ``{filename: checksum}`` of the files a previous call completed."""
    try:
        content = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = content.get("files") if isinstance(content, dict) else None
    return dict(files) if isinstance(files, dict) else {}


def _write_marker(folder: Path, files: dict[str, str]) -> None:
    tmp = folder / (MARKER_NAME + ".part")
    payload = {"source": HAM10000_DOI, "files": files}
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER_NAME)


def _is_in_place(rf: RemoteFile, folder: Path, marker: dict[str, str]) -> bool:
    """Whether ``rf`` needs no download.

    Files and folders only appear under their final name once complete (atomic
    rename), so an existing target is taken to be complete. It is re-fetched when the
    marker says it came from a different version (another checksum); a target
    without a marker entry was put there by hand and is kept. An image folder that
    lost images later is repaired by :func:`_repair_image_folders`.
    """
    if not (folder / rf.target).exists():
        return False
    recorded = marker.get(rf.filename)
    return recorded is None or recorded == rf.checksum


def _fetch_remote_file(rf: RemoteFile, base: str, folder: Path, *, verbose: int) -> None:
    """Download ``rf`` into ``folder``, verify it, and unpack it if it is a zip."""
    url = _join_url(base, rf.url_path)
    download = folder / rf.filename
    algorithm, _, expected = rf.checksum.partition(":")
    if download.is_file() and _file_checksum(download, algorithm) == expected.lower():
        # Left by a call interrupted while unpacking: the download itself is good.
        if verbose:
            print(f"Using {download} (already downloaded, checksum OK)", file=sys.stderr)
    else:
        if verbose:
            print(f"Downloading {rf.filename} from {url}", file=sys.stderr)
        _download(url, download, rf.checksum, verbose=verbose)
    if rf.filename.endswith(".zip"):
        _unpack_flat(download, folder / rf.target, verbose=verbose)
        download.unlink()
    else:
        _ensure_comma_separated(download)


def _download(url: str, dest: Path, checksum: str, *, verbose: int) -> None:
    """Stream ``url`` to ``dest`` through ``dest.part``; check ``checksum``; rename.

    Whatever goes wrong, no partial file is left behind.
    """
    algorithm, _, expected = checksum.partition(":")
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    part = dest.with_name(dest.name + ".part")
    try:
        try:
            _stream(url, part, hasher, desc=dest.name, verbose=verbose)
        except _Interrupted as exc:
            raise OSError(
                f"downloading {dest.name} from {url} failed: download interrupted: got "
                f"{exc.received} of {exc.expected} bytes (the server closed the connection). "
                "The partial file was deleted; call fetch_ham10000 again to retry."
            ) from exc
        except HTTPError as exc:
            raise OSError(
                f"downloading {dest.name} from {url} failed: HTTP {exc.code} {exc.reason}. "
                "Check that base_url / $SKINFUSE_HAM10000_URL points at the HAM10000 files, "
                "or retry later if the server is busy."
            ) from exc
        except (OSError, HTTPException) as exc:  # URLError, timeouts, dropped connections
            reason = exc.reason if isinstance(exc, URLError) else exc
            raise OSError(
                f"downloading {dest.name} from {url} failed: {reason!s}. Check the network "
                "connection and call fetch_ham10000 again, or set base_url / "
                "$SKINFUSE_HAM10000_URL to a reachable mirror."
            ) from exc
        actual = hasher.hexdigest()
        if actual != expected.lower():
            raise OSError(
                f"checksum mismatch for {dest.name} downloaded from {url}: expected "
                f"{algorithm} {expected}, got {actual}. The file was deleted; call "
                "fetch_ham10000 again to retry. If it fails again, the server (or a proxy) "
                "serves a different file: check base_url / $SKINFUSE_HAM10000_URL."
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


class _Interrupted(OSError):
    """The server sent fewer bytes than its Content-Length announced."""

    def __init__(self, received: int, expected: int):
        super().__init__(f"download interrupted: got {received} of {expected} bytes")
        self.received, self.expected = received, expected


def _stream(url: str, out: Path, hasher, *, desc: str, verbose: int) -> None:
    """Write the body of ``url`` to ``out`` in chunks, feeding ``hasher``.

    Raises :class:`_Interrupted` if the body is shorter than its Content-Length.
    """
    request = Request(url, headers={"User-Agent": _USER_AGENT})
    with urlopen(request, timeout=_TIMEOUT_S) as response, out.open("wb") as fh:
        length = response.headers.get("Content-Length")
        with progress(
            total=int(length) if length and length.isdigit() else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not verbose,
            file=sys.stderr,
        ) as bar:
            expected = int(length) if length and length.isdigit() else None
            received = 0
            try:
                while chunk := response.read(_CHUNK_SIZE):
                    fh.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
            except IncompleteRead as exc:
                raise _Interrupted(received + len(exc.partial), expected or -1) from exc
            if expected is not None and received < expected:
                raise _Interrupted(received, expected)


def _file_checksum(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def _is_junk(member: str) -> bool:
    parts = PurePosixPath(member).parts
    return not parts or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def _unpack_flat(archive: Path, dest_dir: Path, *, verbose: int) -> None:
    """Unpack the files of ``archive`` directly into ``dest_dir``.

    Archives whose members sit at the top level and archives that wrap them in
    a folder give the same result. Only base names are used, so a member name
    cannot write outside ``dest_dir``. The folder appears under its final name
    only once every member is written.
    """
    tmp = dest_dir.with_name(dest_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise OSError(
                f"{archive} is not a valid zip archive ({exc}); delete it and call "
                "fetch_ham10000 again."
            ) from exc
        with zf:
            members = [
                m
                for m in zf.infolist()
                if not m.is_dir() and not _is_junk(m.filename.replace("\\", "/"))
            ]
            if not members:
                raise OSError(
                    f"{archive.name} contains no files; delete {archive} and call "
                    "fetch_ham10000 again."
                )
            for member in progress(
                members,
                desc=f"Unpacking {archive.name}",
                unit="file",
                disable=not verbose,
                file=sys.stderr,
            ):
                name = PurePosixPath(member.filename.replace("\\", "/")).name
                out = tmp / name
                if out.exists():
                    raise OSError(
                        f"{archive.name} holds two files named {name!r}; it is not a "
                        "HAM10000 image archive. Check base_url / $SKINFUSE_HAM10000_URL."
                    )
                with zf.open(member) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK_SIZE)
        if dest_dir.exists():
            shutil.rmtree(dest_dir)
        os.replace(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_comma_separated(path: Path) -> None:
    """Rewrite a tab-separated metadata file (Dataverse's ingested copy) as CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        header = fh.readline()
    if "\t" not in header or "," in header:
        return
    tmp = path.with_name(path.name + ".part")
    try:
        with (
            path.open(newline="", encoding="utf-8") as src,
            tmp.open("w", newline="", encoding="utf-8") as dst,
        ):
            csv.writer(dst, lineterminator="\n").writerows(csv.reader(src, delimiter="\t"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
