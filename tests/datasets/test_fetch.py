"""Tests for fetch_ham10000, against a local HTTP server serving fake HAM10000 archives.

No test reaches the network: the archives are tiny synthetic stand-ins built in
``tmp_path`` (ids ``FAKE_*``, lesions ``FAKELES_*``) and served on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from skinfuse.datasets import _fetch
from skinfuse.datasets._fetch import MARKER_NAME, RemoteFile, fetch_ham10000


class Row(NamedTuple):
    lesion_id: str
    image_id: str
    dx: str
    dx_type: str
    age: float
    sex: str
    localization: str
    part: int  # which image archive holds it


ROWS = [
    Row("FAKELES_0000001", "FAKE_0000001", "nv", "follow_up", 45.0, "male", "back", 1),
    Row("FAKELES_0000001", "FAKE_0000002", "nv", "follow_up", 45.0, "male", "back", 2),
    Row("FAKELES_0000002", "FAKE_0000003", "mel", "histo", 70.0, "female", "face", 1),
    Row("FAKELES_0000003", "FAKE_0000004", "bkl", "consensus", 60.0, "female", "trunk", 1),
    Row("FAKELES_0000003", "FAKE_0000005", "bkl", "consensus", 60.0, "female", "trunk", 2),
    Row("FAKELES_0000004", "FAKE_0000006", "bcc", "histo", 80.0, "male", "neck", 1),
    Row("FAKELES_0000005", "FAKE_0000007", "akiec", "histo", 75.0, "male", "scalp", 2),
    Row("FAKELES_0000006", "FAKE_0000008", "df", "consensus", 35.0, "female", "chest", 1),
    Row("FAKELES_0000007", "FAKE_0000009", "vasc", "histo", 50.0, "male", "abdomen", 2),
]
HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
ZIP_1 = "HAM10000_images_part_1.zip"
ZIP_2 = "HAM10000_images_part_2.zip"
CSV = "HAM10000_metadata.csv"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _metadata_csv() -> str:
    lines = [HEADER]
    lines += [
        f"{r.lesion_id},{r.image_id},{r.dx},{r.dx_type},{r.age:g},{r.sex},{r.localization}"
        for r in ROWS
    ]
    return "\n".join(lines) + "\n"


def _build_remote(root: Path) -> dict[str, bytes]:
    """Write the three official files into ``root``; return the JPEG bytes by image id."""
    root.mkdir()
    images = {r.image_id: _jpeg(i) for i, r in enumerate(ROWS)}
    (root / CSV).write_text(_metadata_csv(), encoding="utf-8")
    # Part 1: members at the top level of the archive.
    with zipfile.ZipFile(root / ZIP_1, "w") as zf:
        for r in ROWS:
            if r.part == 1:
                zf.writestr(f"{r.image_id}.jpg", images[r.image_id])
    # Part 2: members inside a folder, plus the junk macOS zip tools add.
    with zipfile.ZipFile(root / ZIP_2, "w") as zf:
        zf.writestr("HAM10000_images_part_2/", b"")
        for r in ROWS:
            if r.part == 2:
                zf.writestr(f"HAM10000_images_part_2/{r.image_id}.jpg", images[r.image_id])
        zf.writestr("__MACOSX/HAM10000_images_part_2/._FAKE_0000002.jpg", b"junk")
        zf.writestr("HAM10000_images_part_2/.DS_Store", b"junk")
    return images


class _CountingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, requests, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self._requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # keep test output clean
        pass


def _table(root: Path) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name, name, "md5:" + _md5((root / name).read_bytes()))
        for name in (CSV, ZIP_1, ZIP_2)
    )


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch):
    """A test that forgets base_url must fail fast, not download from Dataverse."""
    monkeypatch.setattr(_fetch, "DEFAULT_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.delenv(_fetch.BASE_URL_ENV, raising=False)
    monkeypatch.delenv("SKINFUSE_DATA_HOME", raising=False)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve fake HAM10000 archives on 127.0.0.1; swap in their checksums."""
    root = tmp_path / "remote"
    images = _build_remote(root)
    table = _table(root)
    monkeypatch.setattr(_fetch, "REMOTE_FILES", table)
    requests: list[str] = []
    handler = functools.partial(_CountingHandler, requests=requests, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{httpd.server_address[1]}/",
            root=root,
            table=table,
            images=images,
            requests=requests,
            home=tmp_path / "home",
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _leftovers(folder: Path) -> list[str]:
    """Partial files, partial folders and archives left in ``folder``."""
    return sorted(
        p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.suffix == ".zip"
    )


def test_fetch_downloads_unpacks_and_loads(server):
    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)

    assert sorted(server.requests) == sorted(f"/{name}" for name in (CSV, ZIP_1, ZIP_2))
    assert ham.frame.shape[0] == len(ROWS)
    assert list(ham.data.columns) == ["image_path", "age", "sex", "localization"]
    image_ids = [Path(p).stem for p in ham.data["image_path"]]
    got = {i: (dx, lesion) for i, dx, lesion in zip(image_ids, ham.target, ham.groups)}
    assert got == {r.image_id: (r.dx, r.lesion_id) for r in ROWS}
    assert ham.target_names.tolist() == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert dict(zip(image_ids, ham.data["age"])) == {r.image_id: r.age for r in ROWS}
    assert dict(zip(image_ids, ham.data["localization"])) == {
        r.image_id: r.localization for r in ROWS
    }
    assert "HAM10000" in ham.DESCR

    # Each image is in its official folder, with the bytes that were served.
    folder = server.home / "ham10000"
    for path in ham.data["image_path"]:
        path = Path(path)
        row = next(r for r in ROWS if r.image_id == path.stem)
        assert path.parent == folder / f"HAM10000_images_part_{row.part}"
        assert path.read_bytes() == server.images[row.image_id]


def test_fetch_leaves_the_official_layout_and_nothing_else(server):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)

    folder = server.home / "ham10000"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CSV, "HAM10000_images_part_1", "HAM10000_images_part_2", MARKER_NAME]
    )
    assert (folder / CSV).read_text(encoding="utf-8").splitlines()[0] == HEADER
    assert sorted(p.name for p in (folder / "HAM10000_images_part_2").iterdir()) == [
        "FAKE_0000002.jpg",
        "FAKE_0000005.jpg",
        "FAKE_0000007.jpg",
        "FAKE_0000009.jpg",
    ]
    assert _leftovers(folder) == []  # zips deleted once unpacked, no .part
    marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    assert marker["files"] == {rf.filename: rf.checksum for rf in server.table}


def test_second_call_does_not_download_again(server):
    first = fetch_ham10000(server.home, base_url=server.url, verbose=0)
    assert len(server.requests) == 3

    second = fetch_ham10000(server.home, base_url=server.url, verbose=0)
    offline = fetch_ham10000(server.home, download_if_missing=False, verbose=0)

    assert len(server.requests) == 3
    assert second.target.tolist() == first.target.tolist()
    assert offline.groups.tolist() == first.groups.tolist()


def test_corrupted_download_raises_and_leaves_no_partial_file(server):
    good = (server.root / ZIP_2).read_bytes()
    bad = good[:-10] + b"0123456789"
    (server.root / ZIP_2).write_bytes(bad)
    expected = dict((rf.filename, rf.checksum) for rf in server.table)[ZIP_2]

    with pytest.raises(OSError, match=f"checksum mismatch for {ZIP_2}") as excinfo:
        fetch_ham10000(server.home, base_url=server.url, verbose=0)

    message = str(excinfo.value)
    assert expected.removeprefix("md5:") in message
    assert _md5(bad) in message
    assert "call fetch_ham10000 again" in message
    folder = server.home / "ham10000"
    assert _leftovers(folder) == []
    assert not (folder / "HAM10000_images_part_2").exists()
    # What was complete before the failure is kept and recorded...
    assert (folder / "HAM10000_images_part_1").is_dir()
    marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    assert sorted(marker["files"]) == sorted([CSV, ZIP_1])

    # ... so that a retry, once the server is fixed, fetches only the bad file.
    (server.root / ZIP_2).write_bytes(good)
    del server.requests[:]
    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)
    assert server.requests == [f"/{ZIP_2}"]
    assert len(ham.target) == len(ROWS)


def test_download_if_missing_false_raises_without_downloading(server):
    with pytest.raises(OSError, match="download_if_missing=True") as excinfo:
        fetch_ham10000(server.home, base_url=server.url, download_if_missing=False)

    assert str(server.home / "ham10000") in str(excinfo.value)
    assert ZIP_1 in str(excinfo.value)
    assert server.requests == []


def test_hand_placed_data_is_used_as_is(server):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)
    (server.home / "ham10000" / MARKER_NAME).unlink()  # as if unpacked by hand

    ham = fetch_ham10000(server.home, download_if_missing=False, verbose=0)

    assert len(server.requests) == 3
    assert len(ham.target) == len(ROWS)


def test_file_from_another_version_is_fetched_again(server):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)
    folder = server.home / "ham10000"
    # As if fetched by an older skinfuse whose table pinned an older metadata file.
    old = HEADER + "\nFAKELES_0000001,FAKE_0000001,nv,histo,40,male,back\n"
    (folder / CSV).write_text(old, encoding="utf-8")
    marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    marker["files"][CSV] = "md5:" + _md5(old.encode())
    (folder / MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
    del server.requests[:]

    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)

    assert server.requests == [f"/{CSV}"]
    assert (folder / CSV).read_text(encoding="utf-8") == _metadata_csv()
    assert len(ham.target) == len(ROWS)


def test_verified_archive_left_by_an_interrupted_unpack_is_reused(server):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)
    folder = server.home / "ham10000"
    # As if the process died after downloading part 2 but before unpacking it.
    (folder / MARKER_NAME).unlink()
    shutil.rmtree(folder / "HAM10000_images_part_2")
    shutil.copyfile(server.root / ZIP_2, folder / ZIP_2)
    del server.requests[:]

    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)

    assert server.requests == []
    assert len(ham.target) == len(ROWS)
    assert _leftovers(folder) == []


def test_verbose_0_prints_nothing(server, capsys):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_verbose_1_reports_each_download(server, capsys):
    fetch_ham10000(server.home, base_url=server.url, verbose=1)

    err = capsys.readouterr().err
    for name in (CSV, ZIP_1, ZIP_2):
        assert f"Downloading {name} from {server.url}{name}" in err
    assert f"Unpacking {ZIP_1}" in err


def test_base_url_from_environment(server, monkeypatch):
    monkeypatch.setenv(_fetch.BASE_URL_ENV, server.url)

    ham = fetch_ham10000(server.home, verbose=0)

    assert len(server.requests) == 3
    assert len(ham.target) == len(ROWS)


def test_return_X_y_and_arrays(server):
    X, y = fetch_ham10000(server.home, base_url=server.url, as_frame=False, return_X_y=True)

    assert isinstance(X, np.ndarray)
    assert X.shape == (len(ROWS), 4)
    assert sorted(y.tolist()) == sorted(r.dx for r in ROWS)


def test_tab_separated_metadata_is_stored_as_csv(server, monkeypatch):
    # Dataverse's ingested copy of the metadata: tab separated, every field quoted.
    lines = [line.split(",") for line in _metadata_csv().splitlines()]
    tab = "".join("\t".join(f'"{v}"' for v in fields) + "\n" for fields in lines)
    (server.root / "HAM10000_metadata.tab").write_text(tab, encoding="utf-8")
    table = (
        RemoteFile(CSV, "HAM10000_metadata.tab?format=original", "md5:" + _md5(tab.encode())),
        *server.table[1:],
    )
    monkeypatch.setattr(_fetch, "REMOTE_FILES", table)

    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)

    stored = (server.home / "ham10000" / CSV).read_text(encoding="utf-8")
    assert stored == _metadata_csv()
    assert sorted(ham.target.tolist()) == sorted(r.dx for r in ROWS)


def test_http_error_names_the_file_and_url(server, monkeypatch):
    table = (RemoteFile(CSV, "no_such_file.csv", "md5:" + "0" * 32),)
    monkeypatch.setattr(_fetch, "REMOTE_FILES", table)

    with pytest.raises(OSError, match="HTTP 404") as excinfo:
        fetch_ham10000(server.home, base_url=server.url, verbose=0)

    assert f"{server.url}no_such_file.csv" in str(excinfo.value)
    assert _leftovers(server.home / "ham10000") == []
    assert not (server.home / "ham10000" / CSV).exists()


def test_unreachable_server_raises_a_clear_error(server):
    # Port 9 (discard) on localhost: nothing listens there in the test environment.
    with pytest.raises(OSError, match=r"downloading HAM10000_metadata\.csv from .* failed"):
        fetch_ham10000(server.home, base_url="http://127.0.0.1:9/", verbose=0)

    assert _leftovers(server.home / "ham10000") == []


class _ShortResponse(io.BytesIO):
    """A response that announces ``length`` bytes and ends after fewer (a dropped server)."""

    def __init__(self, body: bytes, length: int):
        super().__init__(body)
        self.headers = {"Content-Length": str(length)}


def test_interrupted_download_is_not_a_checksum_mismatch(server, monkeypatch):
    body = (server.root / CSV).read_bytes()

    def urlopen(request, timeout):
        return _ShortResponse(body[:40], len(body))

    monkeypatch.setattr(_fetch, "urlopen", urlopen)
    with pytest.raises(OSError, match=f"download interrupted: got 40 of {len(body)} bytes") as exc:
        fetch_ham10000(server.home, base_url=server.url, verbose=0)

    assert "checksum" not in str(exc.value) and "call fetch_ham10000 again" in str(exc.value)
    assert CSV in str(exc.value)
    assert _leftovers(server.home / "ham10000") == []
    assert not (server.home / "ham10000" / CSV).exists()


def test_server_closing_mid_file_is_reported_as_interrupted(server, monkeypatch):
    # A real socket: the local server announces the whole file, sends half and hangs up.
    class Dropping(_CountingHandler):
        def do_GET(self):
            body = (server.root / ZIP_1).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True

    handler = functools.partial(Dropping, requests=[], directory=str(server.root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    monkeypatch.setattr(_fetch, "REMOTE_FILES", (server.table[1],))
    size = (server.root / ZIP_1).stat().st_size
    try:
        with pytest.raises(OSError, match=f"interrupted: got {size // 2} of {size} bytes"):
            fetch_ham10000(
                server.home, base_url=f"http://127.0.0.1:{httpd.server_address[1]}/", verbose=0
            )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert _leftovers(server.home / "ham10000") == []


@pytest.mark.parametrize("part", [1, 2])
def test_image_folder_missing_images_is_repaired(server, part):
    fetch_ham10000(server.home, base_url=server.url, verbose=0)
    folder = server.home / "ham10000"
    lost = next(r.image_id for r in ROWS if r.part == part)
    (folder / f"HAM10000_images_part_{part}" / f"{lost}.jpg").unlink()
    del server.requests[:]

    with pytest.raises(OSError, match=f"incomplete: 1 images .* missing .*{lost}"):
        fetch_ham10000(server.home, download_if_missing=False, verbose=0)
    assert server.requests == []

    ham = fetch_ham10000(server.home, base_url=server.url, verbose=0)

    # archives fetched again in order, only until nothing is missing
    assert server.requests == [f"/{ZIP_1}", f"/{ZIP_2}"][:part]
    assert len(ham.target) == len(ROWS)
    path = folder / f"HAM10000_images_part_{part}" / f"{lost}.jpg"
    assert path.read_bytes() == server.images[lost]
    assert _leftovers(folder) == []
