"""Downloads against a local HTTP server: resume, truncation, bad checksum, errors."""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from minitl import hub
from minitl.errors import DownloadError

SIZE = 300_000
PAYLOAD = np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
FILE = "blob.bin"


class FileServer:
    """Serves PAYLOAD at any path. `mode`: 'ok', 'truncate' (close after half
    the body), 'wrong' (other bytes of the same length), 'error' (HTTP 500),
    'norange' (ignore Range, always 200). Paths starting with /fail give 500."""

    def __init__(self):
        self.mode = "ok"
        self.requests = []  # (path, Range header or None, status, bytes sent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                if server.mode == "error" or self.path.startswith("/fail"):
                    server.requests.append((self.path, rng, 500, 0))
                    self.send_error(500, "broken on purpose")
                    return
                body = PAYLOAD if server.mode != "wrong" else PAYLOAD[::-1]
                start, status = 0, 200
                if rng and server.mode != "norange":
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(body):
                        server.requests.append((self.path, rng, 416, 0))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                rest = body[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if server.mode == "truncate":
                    rest = rest[: len(rest) // 2]
                self.wfile.write(rest)
                self.wfile.flush()
                server.requests.append((self.path, rng, status, len(rest)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self):
        host, port = self.httpd.server_address
        return f"http://{host}:{port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def manifest_for(server, path="/files/" + FILE, mirrors=()):
    return {
        "blob": {
            "file": FILE,
            "url": server.base + path,
            "mirrors": [server.base + m for m in mirrors],
            "bytes": SIZE,
            "md5": MD5,
        }
    }


def get(server, folder, **kw):
    kw.setdefault("manifest", manifest_for(server))
    return hub.fetch("blob", directory=folder, progress=False, timeout=5, **kw)


def test_good_download(server, tmp_path):
    path = get(server, tmp_path)
    assert path == tmp_path / FILE
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / (FILE + ".part")).exists()
    assert server.requests == [("/files/" + FILE, None, 200, SIZE)]


def test_progress_bar_does_not_break_the_download(server, tmp_path, capsys):
    path = hub.fetch("blob", directory=tmp_path, manifest=manifest_for(server), timeout=5)
    assert hub.file_md5(path) == MD5
    assert FILE in capsys.readouterr().err


def test_resume_from_a_partial_file(server, tmp_path):
    (tmp_path / (FILE + ".part")).write_bytes(PAYLOAD[:100_000])
    path = get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/files/" + FILE, "bytes=100000-", 206, SIZE - 100_000)]


def test_server_ignoring_range_restarts(server, tmp_path):
    (tmp_path / (FILE + ".part")).write_bytes(b"\0" * 100_000)  # wrong prefix
    server.mode = "norange"
    path = get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/files/" + FILE, "bytes=100000-", 200, SIZE)]


def test_truncated_download_then_resume(server, tmp_path):
    server.mode = "truncate"
    with pytest.raises(DownloadError, match="run again to resume"):
        get(server, tmp_path)
    assert not (tmp_path / FILE).exists()
    part = tmp_path / (FILE + ".part")
    assert part.stat().st_size == SIZE // 2
    server.mode = "ok"
    path = get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/files/" + FILE, f"bytes={SIZE // 2}-", 206, SIZE - SIZE // 2)
    assert not part.exists()


def test_wrong_checksum(server, tmp_path):
    server.mode = "wrong"
    with pytest.raises(DownloadError) as err:
        get(server, tmp_path)
    msg = str(err.value)
    assert FILE in msg and MD5 in msg and hashlib.md5(PAYLOAD[::-1]).hexdigest() in msg
    assert list(tmp_path.iterdir()) == []  # no final file, no .part


def test_server_error(server, tmp_path):
    server.mode = "error"
    with pytest.raises(DownloadError) as err:
        get(server, tmp_path)
    msg = str(err.value)
    assert "500" in msg and server.base + "/files/" + FILE in msg
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server(tmp_path):
    s = FileServer()
    manifest = manifest_for(s)
    s.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match="cannot connect"):
        hub.fetch("blob", directory=tmp_path, progress=False, timeout=5, manifest=manifest)


def test_mirror_used_when_the_first_url_fails(server, tmp_path):
    manifest = manifest_for(server, path="/fail/" + FILE, mirrors=["/mirror/" + FILE])
    path = get(server, tmp_path, manifest=manifest)
    assert path.read_bytes() == PAYLOAD
    assert [r[0] for r in server.requests] == ["/fail/" + FILE, "/mirror/" + FILE]


def test_good_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / FILE).write_bytes(PAYLOAD)
    assert get(server, tmp_path) == tmp_path / FILE
    assert server.requests == []


def test_bad_existing_file_is_replaced(server, tmp_path):
    (tmp_path / FILE).write_bytes(PAYLOAD[::-1])
    path = get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_complete_but_corrupt_part_is_downloaded_again(server, tmp_path):
    (tmp_path / (FILE + ".part")).write_bytes(PAYLOAD[::-1])
    path = get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/files/" + FILE, None, 200, SIZE)]


def test_url_override_full_and_base(server, tmp_path):
    manifest = manifest_for(server, path="/fail/" + FILE)
    get(server, tmp_path / "a", manifest=manifest, url=server.base + "/other/" + FILE)
    get(server, tmp_path / "b", manifest=manifest, url=server.base + "/base/")
    assert [r[0] for r in server.requests] == ["/other/" + FILE, "/base/" + FILE]
    assert (tmp_path / "b" / FILE).read_bytes() == PAYLOAD


def test_unknown_name(tmp_path):
    with pytest.raises(DownloadError, match="unknown file 'nope'"):
        hub.fetch("nope", directory=tmp_path, progress=False)


def test_list_weights_states(server, tmp_path):
    manifest = manifest_for(server)
    manifest["other"] = dict(manifest["blob"], file="other.bin")

    def states(**kw):
        return {r.name: r.status for r in hub.list_weights(tmp_path, manifest=manifest, **kw)}

    assert states() == {"blob": "missing", "other": "missing"}
    (tmp_path / "other.bin.part").write_bytes(b"x")
    assert states()["other"] == "partial"
    (tmp_path / "other.bin").write_bytes(PAYLOAD[::-1])  # right size, wrong bytes
    assert states()["other"] == "present"
    assert states(verify=True)["other"] == "corrupt"
    get(server, tmp_path, manifest=manifest)
    assert states(verify=True)["blob"] == "verified"
    (tmp_path / FILE).write_bytes(b"short")
    assert states()["blob"] == "corrupt"
    row = hub.list_weights(tmp_path, manifest=manifest)[0]
    assert (row.file, row.bytes, row.path) == (FILE, SIZE, tmp_path / FILE)


def test_weights_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITL_HOME", str(tmp_path / "home"))
    assert hub.weights_dir(tmp_path / "x") == tmp_path / "x"
    assert hub.weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv("MINITL_HOME")
    repo = Path(hub.__file__).resolve().parent.parent
    if (repo / "weights" / "README.md").is_file() and (repo / "setup.cfg").is_file():
        assert hub.weights_dir() == repo / "weights"
    else:
        assert hub.weights_dir() == Path.home() / ".minitl" / "weights"


KERAS_FILES = Path(__file__).parent / "data" / "backbones" / "keras_weight_files.json"


def test_packaged_manifest():
    keras = json.loads(KERAS_FILES.read_text())
    names = {"vgg16", "vgg16-notop", "imagenet-class-index", *keras["files"], *keras["aliases"]}
    assert set(hub.MANIFEST) == names
    for name, entry in hub.MANIFEST.items():
        if "alias" in entry:
            assert keras["aliases"][name] == entry["alias"]
            continue
        if entry["md5"] is None:  # Keras' MobileNetV2 files: no hash in its source, and the description says so
            assert name.startswith("mobilenet_v2_") and "no md5" in entry["description"], name
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", entry["md5"]), name
        assert entry["url"].startswith("https://") and entry["url"].endswith("/" + entry["file"])
        assert all(m.endswith("/" + entry["file"]) for m in entry.get("mirrors", []))
        assert entry["bytes"] is None or entry["bytes"] > 0
        if name in keras["files"]:  # as Keras' source gives them (the class index's size is known)
            assert {k: entry[k] for k in ("file", "url", "md5")} == {k: keras["files"][name][k]
                                                                    for k in ("file", "url", "md5")}
    assert hub.MANIFEST["vgg16"]["bytes"] == 553_467_096
    assert hub.MANIFEST["vgg16-notop"]["md5"] == "6d6bbae143d832006294945121d1f1fc"
    assert hub.MANIFEST["resnet50-notop"]["md5"] == "4d473c1dd8becc155b73f8504c6f6626"
    for arch in ("vgg19", "resnet50", "inception_v3", "mobilenet_v2"):
        assert f"{arch}-notop" in hub.MANIFEST and arch in hub.MANIFEST
    assert hub.is_verifiable("inception_v3-notop") and not hub.is_verifiable("mobilenet_v2-notop")


def test_unknown_size_is_checked_by_md5_and_the_announced_length(server, tmp_path):
    manifest = manifest_for(server)
    manifest["blob"]["bytes"] = None
    path = get(server, tmp_path, manifest=manifest)
    assert path.read_bytes() == PAYLOAD
    path.unlink()
    server.mode = "wrong"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        get(server, tmp_path, manifest=manifest)
    server.mode = "truncate"
    with pytest.raises(DownloadError, match="kept, run again to resume"):
        get(server, tmp_path, manifest=manifest)
    server.mode = "ok"  # resumes from what the broken download kept
    assert get(server, tmp_path, manifest=manifest).read_bytes() == PAYLOAD
    assert server.requests[-1][1] is not None and server.requests[-1][2] == 206


def test_file_without_md5_is_fetched_but_never_called_verified(server, tmp_path, capsys):
    from minitl.cli import main
    manifest = manifest_for(server)
    manifest["blob"].update(bytes=None, md5=None)
    path = get(server, tmp_path, manifest=manifest)
    assert path.read_bytes() == PAYLOAD and not hub.is_verifiable("blob", manifest)
    rows = hub.list_weights(tmp_path, verify=True, manifest=manifest)
    assert [(r.name, r.status, r.bytes) for r in rows] == [("blob", "unverified", SIZE)]
    # the command line says so, for the packaged MobileNetV2 entry served from here
    code = main(["weights", "fetch", "mobilenet_v2-notop", "--dir", str(tmp_path), "--quiet",
                 "--url", server.base + "/files/"])
    out = capsys.readouterr().out
    assert code == 0 and "could not be verified" in out
    assert (tmp_path / hub.MANIFEST["mobilenet_v2_1.0_224-notop"]["file"]).read_bytes() == PAYLOAD


def test_cli_fetch_of_a_backbone_file_checks_its_md5(server, tmp_path, capsys):
    from minitl.cli import main
    code = main(["weights", "fetch", "resnet50-notop", "--dir", str(tmp_path), "--quiet",
                 "--url", server.base + "/files/"])
    assert code == 1 and "checksum mismatch" in capsys.readouterr().err  # the payload is not Keras' file
    assert not list(tmp_path.iterdir())
