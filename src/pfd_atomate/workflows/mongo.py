"""A jobflow JobStore on a MongoDB server, and a local SecantusDB server for tests and scripts.

Job documents go to a maggma ``MongoStore``; the ``data`` additional store (frames, datasets,
model files: ``@job(data=[...])``) is a ``GridFSStore``, so objects larger than MongoDB's
16 MB document limit are chunked instead of raising ``DocumentTooLarge``.

The same store description (:func:`jobstore_spec`) serves every manager: ``JobStore.from_dict_spec``
(scripts, ``run_locally``, FireWorks' ``flow_to_workflow(store=...)``), the ``JOB_STORE`` entry of
``jobflow.yaml`` and the ``jobstore`` entry of a jobflow-remote project.

:func:`start_server` runs SecantusDB (a MongoDB wire-protocol server with WiredTiger storage,
``pip install secantusdb``) in a child process on a free loopback port. It is the test and
laptop stand-in for a real ``mongod``; every function here also works against MongoDB itself.

Run ``python -m pfd_atomate.workflows.mongo --storage-path DIR --port-file FILE`` to start one
by hand (see ``scripts/start_mongo.sh``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import JobStore

from pfd_atomate.process import die_with_parent


def _check_loopback(host: str) -> None:
    """Refuse any address a server started here would expose beyond this machine."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the test server only listens on a loopback address (127.0.0.1, ::1), not {host!r}")


def jobstore_spec(
    host: str = "127.0.0.1",
    port: int = 27017,
    database: str = "pfd",
    collection: str = "outputs",
    data_collection: str = "outputs_data",
    compression: bool = True,
    **client_kwargs: Any,
) -> dict:
    """The ``JobStore.from_dict_spec`` description of a MongoDB JobStore with GridFS ``data``.

    Parameters
    ----------
    host, port: the MongoDB server.
    database: database of both stores.
    collection: collection of the job documents.
    data_collection: GridFS bucket (``<name>.files`` / ``<name>.chunks``) of the ``data`` store.
    compression: zlib-compress GridFS blobs. On by default: maggma's ``GridFSStore`` writes each blob
        as JSON, so a model file travels base64-encoded (+33 %); zlib brings it back below the
        file's own size and halves the frames. Measured on the full demo's store (Si8, DPA-4):
        10.4 MiB of blobs -> 6.8 MiB (models 5.8 -> 4.1 MiB for a 4.4 MiB file), 0.8 s of zlib
        in all. Blobs written without compression stay readable (maggma reads the flag per file).
    **client_kwargs: extra store arguments (``username``, ``password``, ``auth_source``, ...).

    Returns
    -------
    dict: ``{"docs_store": {"type": "MongoStore", ...}, "additional_stores": {"data": {"type":
        "GridFSStore", ...}}}``, usable as ``JOB_STORE`` in jobflow.yaml and as the
        ``jobstore`` of a jobflow-remote project.
    """
    common = {"database": database, "host": host, "port": int(port), **client_kwargs}
    return {
        "docs_store": {"type": "MongoStore", "collection_name": collection, **common},
        "additional_stores": {
            "data": {"type": "GridFSStore", "collection_name": data_collection, "compression": compression, **common}
        },
    }


def mongo_jobstore(host: str = "127.0.0.1", port: int = 27017, database: str = "pfd", **kwargs: Any) -> JobStore:
    """A JobStore with documents in MongoDB and the ``data`` store in GridFS.

    Parameters are those of :func:`jobstore_spec`. The store is not connected yet
    (jobflow, FireWorks and jobflow-remote connect it where the job runs).
    """
    return JobStore.from_dict_spec(jobstore_spec(host=host, port=port, database=database, **kwargs))


@dataclass
class MongoServer:
    """A SecantusDB server running in a child process (see :func:`start_server`).

    Attributes
    ----------
    host, port: where it listens (loopback only).
    storage_path: WiredTiger folder (``":memory:"``: nothing kept after :meth:`stop`).
    process: the child process.
    log_path: the server's log file.
    """

    host: str
    port: int
    storage_path: str
    process: subprocess.Popen = field(repr=False)
    log_path: Path | None = None

    @property
    def uri(self) -> str:
        """``mongodb://host:port/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mongodb://{host}:{self.port}/"

    def client(self, **kwargs: Any):
        """A ``pymongo.MongoClient`` connected to this server."""
        from pymongo import MongoClient

        return MongoClient(self.host, self.port, **{"serverSelectionTimeoutMS": 10_000, **kwargs})

    def jobstore(self, database: str = "pfd", **kwargs: Any) -> JobStore:
        """:func:`mongo_jobstore` on this server."""
        return mongo_jobstore(self.host, self.port, database, **kwargs)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server (WiredTiger closes cleanly), SIGKILL if it does not exit in time."""
        stop_process(self.process, timeout)

    def __enter__(self) -> MongoServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


#: WiredTiger's message when another process has the database open
_HELD_ELSEWHERE = "already being managed by another process"


def start_server(
    storage_path: str | Path = ":memory:",
    host: str = "127.0.0.1",
    port: int = 0,
    log_path: str | Path | None = None,
    timeout: float = 60.0,
    stop_with_parent: bool = False,
    pid_file: str | Path | None = None,
) -> MongoServer:
    """Start SecantusDB in a child process and wait until it answers ``ping``.

    Parameters
    ----------
    storage_path: WiredTiger folder (created; re-opened intact by a later server) or
        ``":memory:"`` for a throw-away database.
    host: loopback address to listen on.
    port: TCP port; 0 lets the server pick a free one (no race with other processes).
    log_path: server log file (default: a temporary file).
    timeout: seconds to wait for the server to listen, and, before that, at most as long again
        for another process to close the database.
    stop_with_parent: the server gets SIGTERM (a clean WiredTiger close) when this process dies,
        however it dies (a run folder's own server must not outlive its run).
    pid_file: the server's pid is written there. A server that an earlier call started on the same
        ``storage_path`` and that still runs (its caller died) is stopped first: SIGTERM, SIGKILL
        after ``timeout`` s. Pass it only while holding the storage folder exclusively (a run
        folder's :class:`~pfd_atomate.workflows.local.RunLock`).

    Returns
    -------
    MongoServer: stop it with :meth:`MongoServer.stop` (or use it as a context manager).

    Raises
    ------
    ValueError: ``host`` is not a loopback address.
    ImportError: secantusdb is not installed.
    RuntimeError: the server exited or did not answer in time (the message ends with the tail of
        the server log).
    """
    _check_loopback(host)
    import secantus  # noqa: F401  (clear ImportError before spawning a child)

    if str(storage_path) != ":memory:":  # the server creates the folder (WiredTiger's home)
        storage_path = str(Path(storage_path).resolve())
    if pid_file is not None:
        _stop_stale_server(Path(pid_file), str(storage_path), timeout)
    port_file = Path(tempfile.mkstemp(prefix="secantus-port-")[1])
    port_file.unlink()
    log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="secantus-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "pfd_atomate.workflows.mongo", "--host", host, "--port", str(port),
           "--storage-path", str(storage_path), "--port-file", str(port_file)]
    held_deadline = time.monotonic() + timeout  # for another process to close the database
    while True:
        with open(log_path, "ab") as log:
            # own session: a Ctrl-C or a SIGKILL aimed at a launcher's process group spares the server
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=die_with_parent(signal.SIGTERM) if stop_with_parent else None)
        # each attempt gets the whole start window: a retry made just before held_deadline is not
        # cut short and reported as a server that hangs
        start_deadline = time.monotonic() + timeout
        while not port_file.is_file() and process.poll() is None and time.monotonic() < start_deadline:
            time.sleep(0.05)
        if port_file.is_file():  # written atomically once the server listens
            break
        if process.poll() is None:
            process.kill()
            process.wait()
            raise RuntimeError(f"SecantusDB did not start within {timeout} s{_log_tail(log_path)}")
        # the server of a run that just died may still be closing the folder's database: wait for it
        held = _HELD_ELSEWHERE in Path(log_path).read_text(errors="replace")[-4000:]
        if not held or time.monotonic() >= held_deadline:
            why = f"another process held the database for {timeout} s" if held else "it exited"
            raise RuntimeError(f"SecantusDB exited with code {process.returncode} ({why}){_log_tail(log_path)}")
        time.sleep(0.5)
    server = MongoServer(host, int(port_file.read_text()), str(storage_path), process, log_path)
    port_file.unlink()
    if pid_file is not None:
        tmp = Path(f"{pid_file}.tmp{os.getpid()}")
        tmp.write_text(str(process.pid))
        os.replace(tmp, pid_file)
    client = server.client(serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
    except Exception as err:
        server.stop()
        raise RuntimeError(f"SecantusDB on {server.uri} does not answer: {err}{_log_tail(log_path)}") from err
    finally:
        client.close()
    return server


def _log_tail(log_path: Path, lines: int = 30) -> str:
    """``"; log: PATH"`` and the log's last lines, for an error message (CI shows no files)."""
    try:
        tail = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    return f"; log: {log_path}" + "".join(f"\n  | {line[:300]}" for line in tail)


def _server_cmdline(pid: int) -> str:
    """The command line of a live process, "" when it is gone, a zombie or not readable (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_stale_server(pid_file: Path, storage_path: str, timeout: float) -> None:
    """Stop the server named in ``pid_file`` if it still serves ``storage_path`` (see :func:`start_server`).

    The command line is checked, so a pid the kernel gave to another process is left alone.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return

    def alive() -> bool:
        cmdline = _server_cmdline(pid)
        return "pfd_atomate.workflows.mongo" in cmdline and f"--storage-path {storage_path} " in f"{cmdline} "

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30.0)):
        if not alive():
            return
        try:
            os.kill(pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    if alive():
        raise RuntimeError(f"a stale SecantusDB server (pid {pid}) on {storage_path} does not exit")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m pfd_atomate.workflows.mongo [--host H] [--port P] [--storage-path DIR]``.

    Runs the server in this process until SIGTERM/SIGINT (the child side of :func:`start_server`).
    """
    import logging

    from secantus import SecantusDBServer

    parser = argparse.ArgumentParser(description="Run a SecantusDB (MongoDB wire protocol) server on loopback.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--storage-path", default=":memory:", help="WiredTiger folder (created), or :memory:")
    parser.add_argument("--port-file", default=None, help="write the chosen port to this file")
    args = parser.parse_args(argv)
    _check_loopback(args.host)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opened = time.monotonic()  # WiredTiger opens (and recovers) in the constructor
    # standalone (no replica-set advertisement): clients connect directly, no oplog writes
    server = SecantusDBServer(host=args.host, port=args.port, storage_path=args.storage_path, replica_set_name=None)

    stopping = []

    def _stop(signum, frame):  # noqa: ARG001
        if stopping:  # a second signal while WiredTiger closes: let the first close finish
            return
        stopping.append(signum)
        began = time.monotonic()
        _log(f"stopping on signal {signum}")
        server.stop()
        _log(f"stopped in {time.monotonic() - began:.1f} s")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        Path(tmp).write_text(str(server.address[1]))
        os.replace(tmp, args.port_file)  # atomic: the parent never reads a half-written port
    _log(f"SecantusDB pid {os.getpid()} listening on {server.uri} (storage {args.storage_path}) "
         f"after {time.monotonic() - opened:.1f} s")
    server.wait()


def _log(message: str) -> None:
    """A timestamped line on stdout (the server log): when a database closed and reopened."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


if __name__ == "__main__":
    main()


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a child process (SIGKILL when it does not exit within ``timeout`` s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
