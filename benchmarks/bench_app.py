"""Benchmark the web page: seconds per photo per method, or the page under load (not a test).

    python benchmarks/bench_app.py [--run DIR] [--photo FILE] [--repeat N] [--no-judges]
    python benchmarks/bench_app.py --users N [--photos-each 3] [--method none] [--run DIR |
                                   --model DIR] [--photo FILE] [--no-judges]

Without --users: times ``age_cgan.app.AgingApp.age`` (what the page's button runs, without the
HTTP and the browser): upload checks, detection and crop, aging to every category by the
method, the judges' verdicts when installed, and the grid, images and zip for download. Each
method is called once first (tracing/compiling, reported apart), then ``--repeat`` times on a
fresh upload (no cached faces). Without --run: the shipped model when this install has it, else
untrained networks of the lite architecture (64 px): speed does not depend on training.

With --users N (default 8 when given bare): starts the page as a user does
(``python -m age_cgan.app``, the shipped model unless --run/--model) on a free local port, sends
one warm-up request, then N concurrent users (one ``gradio_client`` each) who each send
--photos-each photos one after the other. It prints how many requests were answered (the
page's own message, a result or a photo problem), turned away ("queue full": the page queues
``app.QUEUE_SIZE`` requests beyond the one it works on) and failed (anything else), the median
and 95th-percentile wait, and the server's memory: after the warm-up, at the end and at its
peak. ``load_test`` is what tests/test_faults.py runs with 3 users.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _models(run):
    from age_cgan import app
    from age_cgan.aging import AgingModels
    from age_cgan.ages import PAPER_BINS
    from age_cgan.networks import (build_age_estimator, build_aging_network, build_encoder,
                                   build_face_recognizer, build_generator)

    try:
        folder = app.model_folder(run)
    except app.AppError:
        folder = None
    if folder is not None:
        return AgingModels.from_run(folder), str(folder)
    config = {"arch": "lite", "image_size": 64, "z_dim": 100, "age_bins": PAPER_BINS.spec}
    models = AgingModels(build_encoder(64, 100, arch="lite"),
                         build_generator(100, PAPER_BINS.num_ages, 64, arch="lite"), PAPER_BINS,
                         config, face_recognizer=build_face_recognizer(64, None, 160, arch="lite"),
                         age_estimator=build_age_estimator(64, PAPER_BINS.num_ages, "lite"),
                         aging_network=build_aging_network(64, PAPER_BINS.num_ages, "lite"))
    return models, "untrained lite networks (64 px)"


# --------------------------------------------------------------------------- under load

#: How gradio_client reports a request the page's queue turned away.
TURNED_AWAY = re.compile(r"queue (is )?full", re.I)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mib(pid: int) -> dict:
    """A process's resident memory now and at its peak (``/proc/PID/status``), in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return {"now": round(values.get("VmRSS", 0.0), 1), "peak": round(values.get("VmHWM", 0.0), 1)}


@contextlib.contextmanager
def started_page(serve_args=(), startup_seconds: float = 900, log=None):
    """``python -m age_cgan.app SERVE_ARGS --port P`` with its own TMPDIR, until it answers;
    yields (url, process). Stopped with SIGTERM (as a service manager does) on the way out."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-app-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env.update(TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="3")
    log = Path(log) if log else tmp / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "age_cgan.app", *serve_args,
                                    "--port", str(port)], cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the page exited with {process.returncode}:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page did not answer within {startup_seconds} s:"
                                       f"\n{log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _request(client, photo, labels, method) -> tuple[str, float, str]:
    """One request as a user sends it: (answered | turned away | failed, seconds, detail)."""
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        message = client.predict(handle_file(str(photo)), labels, method, 0,
                                 api_name="/age")[0]
    except Exception as error:  # gradio_client's QueueError, a connection error, ...
        kind = "turned away" if TURNED_AWAY.search(str(error)) else "failed"
        return kind, time.perf_counter() - start, f"{type(error).__name__}: {error}"
    seconds = time.perf_counter() - start
    if isinstance(message, str) and TURNED_AWAY.search(message):
        return "turned away", seconds, message
    if isinstance(message, str) and message.strip():
        return "answered", seconds, message.splitlines()[0]
    return "failed", seconds, f"no message from the page: {message!r}"


def load_test(url: str, pid: int, photo, labels, users: int = 8, photos_each: int = 3,
              method: str = "none") -> dict:
    """One warm-up request, then ``users`` concurrent clients sending ``photos_each`` photos
    each; returns the counts, the waits (median, 95th percentile) and the server's memory."""
    from gradio_client import Client

    kind, first, detail = _request(Client(url, verbose=False), photo, labels, method)
    if kind != "answered":
        raise RuntimeError(f"the warm-up request was {kind}: {detail}")
    before = memory_mib(pid)
    results, lock = [], threading.Lock()
    peak = [before["now"]]
    done = threading.Event()

    def watch():  # the server's resident memory while the users wait
        while not done.wait(0.2):
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], memory_mib(pid)["now"])

    def user():
        try:
            client = Client(url, verbose=False)
        except Exception as error:
            with lock:
                results.extend([("failed", 0.0, f"{type(error).__name__}: {error}")]
                               * photos_each)
            return
        for _ in range(photos_each):
            outcome = _request(client, photo, labels, method)
            with lock:
                results.append(outcome)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=user) for _ in range(users)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    after = memory_mib(pid)
    waits = sorted(seconds for kind, seconds, _ in results if kind == "answered")
    count = {kind: sum(1 for k, _, _ in results if k == kind)
             for kind in ("answered", "turned away", "failed")}
    p95 = waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))] if waits else None
    return {
        "users": users, "photos_each": photos_each, "method": method, "requests": len(results),
        **count, "warm_up_s": round(first, 2), "wall_s": round(wall, 2),
        "median_wait_s": round(statistics.median(waits), 2) if waits else None,
        "p95_wait_s": round(p95, 2) if p95 is not None else None,
        "memory_mib": {"after_warm_up": before["now"], "end": after["now"],
                       "peak_during_load": round(max(peak[0], after["now"]), 1),
                       "peak_of_process": after["peak"],
                       "growth": round(after["now"] - before["now"], 1)},
        "failures": sorted({detail for kind, _, detail in results if kind == "failed"}),
        "messages": sorted({detail for kind, _, detail in results if kind != "failed"})[:5],
    }


def served_labels(serve_args) -> list[str]:
    """The age categories of the model ``python -m age_cgan.app SERVE_ARGS`` serves."""
    from age_cgan import app
    from age_cgan.ages import AgeBins

    run = model = None
    if "--run" in serve_args:
        run = serve_args[serve_args.index("--run") + 1]
    if "--model" in serve_args:
        model = serve_args[serve_args.index("--model") + 1]
    config = json.loads((app.model_folder(run, model) / "config.json").read_text())
    return list(AgeBins.parse(config["age_bins"]).labels)


def main_users(args) -> None:
    serve = [*(["--run", args.run] if args.run else []),
             *(["--model", args.model] if args.model else []),
             *([] if args.judges else ["--no-judges"])]
    labels = served_labels(serve)
    with started_page(serve) as (url, process):
        report = load_test(url, process.pid, args.photo, labels, args.users,
                           args.photos_each, args.method)
    print(f"{report['users']} users x {report['photos_each']} photos ({report['method']}): "
          f"{report['answered']} answered, {report['turned away']} turned away (queue full), "
          f"{report['failed']} failed; wait median {report['median_wait_s']} s, 95th "
          f"percentile {report['p95_wait_s']} s; server memory {report['memory_mib']}",
          file=sys.stderr)
    print(json.dumps(report))


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_app.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--run", help="a run or model folder (default: the shipped model, else "
                   "untrained lite networks)")
    p.add_argument("--model", help="--users: a packaged model folder to serve (default: the "
                   "shipped one)")
    p.add_argument("--photo", default=str(REPO / "age_cgan/examples/astronaut.jpg"),
                   help="the photo each request uploads")
    p.add_argument("--repeat", type=int, default=2,
                   help="timed requests per method, after the first (tracing) one")
    p.add_argument("--no-judges", dest="judges", action="store_false",
                   help="turn off the judges' verdicts in the timed requests (they are timed "
                   "when the [eval] extra is installed)")
    p.add_argument("--users", type=int, nargs="?", const=8, default=None,
                   help="serve the page and send this many concurrent users instead (8 when "
                   "given without a number)")
    p.add_argument("--photos-each", type=int, default=3, help="--users: photos each user sends")
    p.add_argument("--method", default="network", help="--users: the per-photo method")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.users is not None:
        if args.users < 1 or args.photos_each < 1:
            parser().error("--users and --photos-each must be >= 1")
        return main_users(args)
    from age_cgan import app
    from age_cgan.faces import FaceDetector

    models, name = _models(args.run)
    verifier, estimator = app.load_judges(args.judges)
    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    uploads, scratch = work / "uploads", work / "results"
    uploads.mkdir(), scratch.mkdir()
    page = app.AgingApp(models, FaceDetector(), scratch, uploads.resolve(), verifier, estimator)
    report = {"model": name, "judges": page.judged, "photo": args.photo, "methods": {}}
    try:
        for method in page.methods:
            times = []
            for call in range(args.repeat + 1):
                upload = uploads / f"{call}" / Path(args.photo).name
                upload.parent.mkdir()
                shutil.copy(args.photo, upload)
                start = time.perf_counter()
                result = page.age(str(upload), list(models.bins.labels), method, 0, {})
                times.append(time.perf_counter() - start)
                assert "grid" in result, result["message"]
            report["methods"][method] = {"first_s": round(times[0], 2),
                                         "median_s": round(statistics.median(times[1:]), 2)}
            print(method, report["methods"][method], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
