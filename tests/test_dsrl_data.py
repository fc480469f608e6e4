"""DSRL's data by task id, against a real HTTP server on the loopback address.

The server serves a DSRL-format file written by ``save_dataset`` (a slice of the shipped BallRun
data, without attributes, as DSRL's files are), honours HTTP ``Range`` and can be told to drop
the connection part way or to ignore ranges. No test reaches outside this machine.
"""

from __future__ import annotations

import http.server
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import envs
from envs import download
from safe_agents import BCSafe, load_agent
from safe_agents.cli import main as cli_main
from safe_agents.common.serialization import AgentLoadError

TASK = "OfflineBallRun-v0"


def _dsrl_like_bytes(tmp_path: Path) -> bytes:
    """A DSRL-format file made by save_dataset: a few BallRun episodes, no metadata attributes."""
    shipped = envs.load_dataset(TASK, origin="local")
    part = shipped.select_episodes(range(0, shipped.n_episodes, 8))
    path = envs.save_dataset(part._with(metadata={}), tmp_path / "payload.hdf5")
    return path.read_bytes()


class _Server:
    """A loopback HTTP server for one file, with the failure modes a download meets."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.etag = '"v1"'
        self.requests: list[dict[str, str | int | None]] = []
        self.drops = 0  # how many of the next responses stop half way
        self.unavailable = 0  # how many of the next requests get a 503
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                ranged = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                start = 0
                if ranged and not server.ignore_range and if_range in (None, server.etag):
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                total = len(server.payload)
                if self.path.count("/") != 2 or not self.path.endswith(".hdf5"):
                    status = 404
                elif server.unavailable:
                    server.unavailable -= 1
                    status = 503
                elif start >= total > 0:
                    status = 416
                else:
                    status = 206 if start else 200
                server.requests.append({"path": self.path, "range": ranged, "status": status})
                if status in (404, 503):
                    self.send_error(status)
                    return
                if status == 416:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.payload[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", server.etag)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.end_headers()
                if server.drops:
                    server.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dsrl/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _dsrl_like_bytes_variant(payload: bytes) -> bytes:
    """Another valid DSRL-format file of the same task (the server's file changed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.hdf5"
        path.write_bytes(payload)
        data = envs.read_hdf5(path)
        other = data.select_episodes(range(data.n_episodes - 1))
        return envs.save_dataset(other._with(metadata={}), path).read_bytes()


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> bytes:
    return _dsrl_like_bytes(tmp_path_factory.mktemp("payload"))


@pytest.fixture
def server(payload, tmp_path, monkeypatch):
    """The mirror variable points at a fresh server; both caches are empty folders."""
    served = _Server(payload)
    monkeypatch.setenv(download.MIRROR_ENV_VAR, served.url)
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(download.DSRL_CACHE_ENV_VAR, str(tmp_path / "dsrl-cache"))
    yield served
    served.close()


def _destination() -> Path:
    return download.download_dir() / download.dsrl_file_name(TASK)


def test_the_file_name_and_address_are_dsrls_and_the_mirror_replaces_the_host(monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV_VAR)
    assert download.dsrl_file_name("OfflineCarCircle-v0") == "SafetyCarCircle-v0-100-1450.hdf5"
    assert download.dsrl_url("OfflineCarCircle-v0") == (
        "http://data.offline-saferl.org/download/SafetyCarCircle-v0-100-1450.hdf5"
    )
    monkeypatch.setenv(download.MIRROR_ENV_VAR, "http://mirror.local/dsrl")
    assert download.dsrl_url("OfflineCarCircle-v0") == (
        "http://mirror.local/dsrl/SafetyCarCircle-v0-100-1450.hdf5"
    )
    with pytest.raises(envs.DatasetError, match="no DSRL dataset"):
        envs.load_dataset("OfflineToyReachAvoid-v0", origin="dsrl")


def test_dsrl_origin_downloads_validates_caches_and_labels(server, payload):
    data = envs.load_dataset(TASK, origin="dsrl", progress_bar=True)
    assert [request["path"] for request in server.requests] == [
        "/dsrl/" + download.dsrl_file_name(TASK)
    ]
    assert _destination().read_bytes() == payload
    assert not list(_destination().parent.glob(".*.part"))
    spec = envs.get_task(TASK)
    assert data.origin == "dsrl" and data.provenance == f"DSRL {_destination().name}"
    assert data.reference_range() == (spec.reward_min, spec.reward_max)
    assert data.normalization == "DSRL reference returns"
    assert data.metadata["cost_limit"] == spec.cost_limit
    # DSRL's own address, whichever mirror served the bytes (a mirror may carry secrets).
    assert data.metadata["source_url"] == download.dsrl_address(TASK)
    # A second call, and auto, use the cached file: no new request.
    again = envs.load_dataset(TASK, origin="dsrl")
    auto = envs.load_dataset(TASK)
    assert len(server.requests) == 1
    np.testing.assert_array_equal(again.observations, data.observations)
    assert auto.origin == "dsrl"


def test_a_copy_in_dsrls_own_cache_is_used_without_a_connection(server, payload):
    own = download.dsrl_cache_dir() / download.dsrl_file_name(TASK)
    own.parent.mkdir(parents=True)
    own.write_bytes(payload)
    data = envs.load_dataset(TASK, origin="dsrl")
    assert server.requests == [] and data.origin == "dsrl"
    assert not _destination().exists()


def test_a_dropped_connection_resumes_with_a_range_request(server, payload):
    server.drops = 1
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    half = len(payload) // 2
    assert [request["range"] for request in server.requests] == [None, f"bytes={half}-"]
    assert [request["status"] for request in server.requests] == [200, 206]
    assert not list(path.parent.glob(".*.part*"))  # neither the bytes nor their record is left


def test_a_failed_reconnect_is_retried(server, payload):
    # The first response stops half way, the reconnect meets a 503, the third one resumes.
    server.drops = 1
    handle = server.httpd.RequestHandlerClass.do_GET

    def flaky(handler) -> None:
        if len(server.requests) == 1:
            server.unavailable = 1
        handle(handler)

    server.httpd.RequestHandlerClass.do_GET = flaky
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    assert [request["status"] for request in server.requests] == [200, 503, 206]


def test_a_file_that_changed_on_the_server_is_restarted_not_appended_to(server, payload):
    server.drops = 1
    with pytest.raises(envs.DownloadError):
        download.download_dsrl(TASK, retries=0, progress_bar=False)
    server.payload, server.etag = _dsrl_like_bytes_variant(payload), '"v2"'
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == server.payload  # If-Range said the kept bytes were stale
    assert server.requests[-1]["status"] == 200


def test_a_complete_part_file_is_finished_without_downloading_again(server, payload, monkeypatch):
    def stop(path):  # the user pressed Ctrl-C while the finished file was being checked
        raise KeyboardInterrupt

    check = download.read_hdf5
    monkeypatch.setattr(download, "read_hdf5", stop)
    with pytest.raises(KeyboardInterrupt):
        download.download_dsrl(TASK, progress_bar=False)
    monkeypatch.setattr(download, "read_hdf5", check)
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    assert [request["status"] for request in server.requests] == [200, 416]


def test_an_interrupted_download_leaves_no_file_and_the_next_call_completes_it(server, payload):
    server.drops = 2
    with pytest.raises(envs.DownloadError, match="stopped 2 time") as caught:
        download.download_dsrl(TASK, retries=1, progress_bar=False)
    assert "\n" not in str(caught.value) and "call again to resume" in str(caught.value)
    assert not _destination().exists()
    assert envs.load_dataset(TASK, origin="local").origin == "local"  # the partial is unseen
    kept = _destination().with_name(f".{_destination().name}.part").stat().st_size
    assert 0 < kept < len(payload)
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    assert server.requests[-1]["range"] == f"bytes={kept}-"


def test_two_downloads_of_one_file_at_once_fetch_it_once(server, payload):
    paths: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            paths.append(download.download_dsrl(TASK, progress_bar=False))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].read_bytes() == payload
    assert len(server.requests) == 1  # the second waited on the lock, then found the file


def test_a_server_that_ignores_ranges_restarts_the_file_cleanly(server, payload):
    server.drops, server.ignore_range = 1, True
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    assert server.requests[1]["range"] == f"bytes={len(payload) // 2}-"  # asked to resume
    assert [request["status"] for request in server.requests] == [200, 200]  # got it all again


def test_a_damaged_copy_in_dsrls_cache_is_skipped_and_a_good_one_downloaded(server, payload):
    own = download.dsrl_cache_dir() / download.dsrl_file_name(TASK)
    own.parent.mkdir(parents=True)
    own.write_bytes(payload[: len(payload) // 3])  # dsrl's urlretrieve stopped part way
    data = envs.load_dataset(TASK, origin="dsrl", progress_bar=False)
    assert data.origin == "dsrl" and len(server.requests) == 1
    assert _destination().read_bytes() == payload


def test_auto_downloads_a_task_that_has_no_local_copy(server, payload):
    data = envs.load_dataset("OfflineAntRun-v0", progress_bar=False)
    assert data.origin == "dsrl" and data.metadata["task_id"] == "OfflineAntRun-v0"
    assert [request["path"] for request in server.requests] == [
        "/dsrl/" + download.dsrl_file_name("OfflineAntRun-v0")
    ]


def test_the_mirror_must_be_an_http_address_and_its_secrets_are_never_shown(monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV_VAR, "data.example/dsrl")
    with pytest.raises(envs.DownloadError, match="not an http"):
        download.dsrl_url(TASK)
    monkeypatch.setenv(download.MIRROR_ENV_VAR, "https://user:secret@host/dsrl/?token=abc")
    url = download.dsrl_url(TASK)
    assert url == f"https://user:secret@host/dsrl/{download.dsrl_file_name(TASK)}?token=abc"
    assert download.public_address(url) == f"https://host/dsrl/{download.dsrl_file_name(TASK)}"


def test_a_file_that_is_not_a_dsrl_dataset_is_refused_and_deleted(server):
    server.payload = b"<html>a login page, not HDF5</html>"
    with pytest.raises(envs.DatasetError, match="did not serve a DSRL dataset"):
        envs.load_dataset(TASK, origin="dsrl")
    left = [path.name for path in download.download_dir().iterdir()]
    assert not any(name.endswith((".hdf5", ".part")) for name in left), left


def test_a_missing_file_on_the_server_is_one_clear_line(server, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV_VAR, server.url + "missing/")
    server.payload = b""
    with pytest.raises(envs.DownloadError, match="HTTP 404") as caught:
        download.download_dsrl(TASK, progress_bar=False)
    assert "safe-agents collect --task" in str(caught.value) and not _destination().exists()


def test_an_unreachable_host_fails_with_one_line_naming_the_offline_way(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path / "cache"))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens on this port: connection refused
    monkeypatch.setenv(download.MIRROR_ENV_VAR, f"http://127.0.0.1:{port}/")
    with pytest.raises(envs.DownloadError) as caught:
        envs.load_dataset("OfflineAntRun-v0", origin="dsrl", progress_bar=False)
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert "safe-agents collect --task OfflineAntRun-v0" in message
    # auto: no local copy, the download fails, the error is a FileNotFoundError saying both.
    with pytest.raises(FileNotFoundError, match="DSRL's download failed") as caught:
        envs.load_dataset("OfflineAntRun-v0")
    assert "safe-agents collect --task OfflineAntRun-v0" in str(caught.value)


def test_a_host_that_never_answers_fails_within_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path / "cache"))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel accepts the connection; nobody ever answers
    monkeypatch.setenv(download.MIRROR_ENV_VAR, f"http://127.0.0.1:{silent.getsockname()[1]}/")
    download.dsrl_url("OfflineAntRun-v0")  # dsrl's tables are imported before the clock starts
    timeout = 1.0
    start = time.perf_counter()
    try:
        with pytest.raises(envs.DownloadError, match="timed out"):
            envs.load_dataset("OfflineAntRun-v0", origin="dsrl", timeout=timeout)
    finally:
        silent.close()
    # One wait, not one per retry: the elapsed time is a small multiple of the timeout.
    assert time.perf_counter() - start < 10 * timeout


def test_local_origin_never_connects(server, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("origin='local' opened a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(FileNotFoundError, match="origin='local' does not download"):
        envs.load_dataset("OfflineAntRun-v0", origin="local")
    assert envs.load_dataset(TASK, origin="local").origin == "local"  # the shipped build
    assert server.requests == []


def test_auto_prefers_a_local_copy_and_downloads_only_when_there_is_none(server):
    assert envs.load_dataset(TASK).origin == "local"  # shipped: no download
    assert server.requests == []
    data = envs.load_dataset(TASK, origin="dsrl", progress_bar=False)
    assert data.origin == "dsrl" and len(server.requests) == 1
    assert envs.load_dataset(TASK).origin == "dsrl"  # now DSRL's copy comes first
    assert envs.load_dataset(TASK, origin="local").origin == "local"  # the build is still there


@pytest.mark.simulator
def test_agents_record_their_data_and_evaluation_normalizes_with_it(server, tmp_path):
    env = envs.make(TASK)
    spec = envs.get_task(TASK)
    dsrl_data = envs.load_dataset(TASK, origin="dsrl", progress_bar=False)
    local_data = envs.load_dataset(TASK, origin="local")
    for data, expected in ((dsrl_data, "DSRL reference returns"), (local_data, "own return")):
        agent = BCSafe(env, seed=0, preset="cpu").learn_offline(data, n_steps=5)
        assert agent.training_data["provenance"] == data.provenance
        loaded = load_agent(agent.save(tmp_path / "agent.zip"))
        assert loaded.training_data == agent.training_data
        report = envs.evaluate(loaded, env, n_episodes=1)
        assert expected in report["normalization"]
        assert report["reward_range"] == list(data.reference_range())
        low, high = data.reference_range()
        assert report["mean_normalized_return"] == pytest.approx(
            (report["mean_return"] - low) / (high - low)
        )
    assert dsrl_data.reference_range() == (spec.reward_min, spec.reward_max)
    assert local_data.reference_range() != dsrl_data.reference_range()
    env.close()


def test_a_tampered_training_data_record_is_refused(tmp_path, toy_dataset):
    import zipfile

    env = envs.make("OfflineToyReachAvoid-v0")
    path = BCSafe(env, seed=0).learn_offline(toy_dataset, n_steps=2).save(tmp_path / "a.zip")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["training_data"]["reward_range"] = [5.0, float("nan")]
    members["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(buffer.getvalue())
    with pytest.raises(AgentLoadError, match="training_data"):
        load_agent(tampered)


def test_the_download_command_fetches_and_says_what_it_got(server, capsys):
    assert cli_main(["download", TASK, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"DSRL {download.dsrl_file_name(TASK)}" in out and len(server.requests) == 1


def test_the_cli_reports_an_unreachable_host_as_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path / "cache"))
    assert cli_main(["download", "OfflineAntRun-v0", "--timeout", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("safe-agents download: error: cannot reach 127.0.0.1:9")
    assert "\n" not in error


def test_import_dsrl_works_after_import_envs():
    code = "import envs, dsrl, dsrl.infos; print(len(dsrl.infos.DATASET_URLS))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip().splitlines()[-1]) >= 38


@pytest.mark.parametrize(
    "task_id",
    [
        "OfflineToyReachAvoid-v0",
        pytest.param("OfflineBallRun-v0", marks=pytest.mark.simulator),
        pytest.param("OfflinePointGoal1Gymnasium-v0", marks=pytest.mark.simulator),
        pytest.param("OfflineMetadrive-easysparse-v0", marks=pytest.mark.simulator),
    ],
)
def test_every_task_is_a_gymnasium_id(task_id):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    registered = {env_id for env_id in gym.registry if env_id.startswith("safe_agents/")}
    assert registered == {envs.gymnasium_id(task) for task in envs.list_tasks()}
    env = gym.make(envs.gymnasium_id(task_id))
    try:
        check_env(env, skip_render_check=True)
        assert envs.find_task_spec(env).task_id == task_id
        env.reset(seed=0)
        _, _, _, _, info = env.step(env.action_space.sample())
        assert isinstance(info["cost"], float)
    finally:
        env.close()


def test_a_file_too_large_to_read_here_is_kept_for_a_higher_limit(server, payload, monkeypatch):
    monkeypatch.setenv("SAFE_AGENTS_MAX_DATASET_BYTES", "1000")
    with pytest.raises(envs.DatasetError, match="too large to read here") as caught:
        download.download_dsrl(TASK, progress_bar=False)
    assert "SAFE_AGENTS_MAX_DATASET_BYTES" in str(caught.value)
    kept = _destination().with_name(f".{_destination().name}.part")
    assert kept.read_bytes() == payload  # the transfer was good: not deleted
    monkeypatch.delenv("SAFE_AGENTS_MAX_DATASET_BYTES")
    path = download.download_dsrl(TASK, progress_bar=False)
    assert path.read_bytes() == payload
    assert [request["status"] for request in server.requests] == [200, 416]
