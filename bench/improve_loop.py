#!/usr/bin/env python3
"""The continuous-improvement loop end to end (issue 17): a Fashion-MNIST model trained on clean
images serves behind a route; live traffic switches to shifted images (brightness x0.7 and a
2-pixel translation in a random direction) with feedback labels for a share of them; `kiln improve
--watch` must detect the degradation, train a challenger, beat the champion on held-out production
rows, canary it and promote it, with no failed request; live accuracy on the shifted traffic must
rise. Prints each phase's time and the accuracies as JSON (and checks them with --check).

  improve_loop.py --kiln build/kiln [--budget small|full] [--check] [--json OUT]

Every request goes through the real server and is judged against its true label here; nothing
is simulated. Needs numpy only. KILN_HOME: a fresh temp dir (removed at the end unless --keep).
"""
import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
BUDGETS = {
    # train rows, champion epochs, shifted labelled rows before the check, canary steps
    "small": dict(limit=3000, epochs=2, challenger_epochs=2, feedback_rows=1200, steps="50,100",
                  interval="3s", eval_rows=600, min_rows=300),
    "full": dict(limit=0, epochs=2, challenger_epochs=2, feedback_rows=3000, steps="25,50,100",
                 interval="10s", eval_rows=2000, min_rows=1000),
}


def load(split):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(f"{DATA}/{prefix}-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{DATA}/{prefix}-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return x, y


def shift(img, rng):
    """Brightness x0.7, then a 2-pixel translation in a random direction (zero fill)."""
    dy, dx = rng.choice([(2, 0), (-2, 0), (0, 2), (0, -2)])
    out = np.zeros((28, 28), dtype=np.float32)
    src = img.astype(np.float32) * 0.7
    ys = slice(max(0, -dy), 28 - max(0, dy))
    yd = slice(max(0, dy), 28 - max(0, -dy))
    xs = slice(max(0, -dx), 28 - max(0, dx))
    xd = slice(max(0, dx), 28 - max(0, -dx))
    out[yd, xd] = src[ys, xs]
    return out


class Client:
    """One keep-alive connection; raises on a failed request (counted by the caller)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path, body):
        data = json.dumps(body)
        for attempt in range(2):
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                text = r.read()
                return r.status, json.loads(text) if text else None
            except (http.client.HTTPException, ConnectionError, OSError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


class Traffic:
    """Sends images to the route from a background thread; records (correct, phase) per answer."""

    def __init__(self, port, route, images, labels, classes, rng):
        self.client = Client(port)
        self.route, self.images, self.labels, self.classes = route, images, labels, classes
        self.rng = rng
        self.lock = threading.Lock()
        self.results = []  # (t, phase, correct, served_by)
        self.failed = 0
        self.phase = "idle"
        self.shifted = False
        self.feedback_share = 0.0
        self.feedback_sent = 0
        self.stop = False
        self.n = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def one(self):
        i = self.rng.randrange(len(self.images))
        img = shift(self.images[i], self.rng) if self.shifted else self.images[i].astype(np.float32)
        self.n += 1
        rid = f"r{self.n}"
        status, body = self.client.post(
            f"/v2/models/{self.route}/infer",
            {"id": rid, "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                    "data": img.reshape(-1).tolist()}],
             "outputs": [{"name": "labels"}]})
        if status != 200:
            with self.lock:
                self.failed += 1
            return
        label = self.classes[self.labels[i]]
        correct = body["outputs"][0]["data"][0] == label
        with self.lock:
            self.results.append((time.time(), self.phase, correct, body.get("model_version")))
        if self.rng.random() < self.feedback_share:
            s, _ = self.client.post(f"/v2/models/{self.route}/feedback",
                                    {"id": body["id"], "truth": label})
            with self.lock:
                if s == 200:
                    self.feedback_sent += 1
                else:
                    self.failed += 1

    def run(self):
        while not self.stop:
            try:
                self.one()
            except Exception as e:  # a refused or broken connection is a failed request
                with self.lock:
                    self.failed += 1
                print(f"traffic: {e}", file=sys.stderr)
                time.sleep(0.05)

    def accuracy(self, phase, last=None):
        with self.lock:
            r = [c for (_, p, c, _) in self.results if p == phase]
        if last:
            r = r[-last:]
        return (sum(r) / len(r), len(r)) if r else (float("nan"), 0)

    def count(self, phase):
        with self.lock:
            return sum(1 for (_, p, _, _) in self.results if p == phase)


def run(cmd, env, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=env, check=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--budget", choices=BUDGETS, default="small")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the targets hold")
    ap.add_argument("--min-gain", type=float, default=0.05)
    ap.add_argument("--json", help="write the report here too")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--improve-set", action="append", default=[],
                    help="more --set overrides for the challenger (e.g. init=fmnist@production "
                         "to fine-tune the champion instead of retraining)")
    args = ap.parse_args()
    b = BUDGETS[args.budget]
    kiln = os.path.abspath(args.kiln)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    home = tempfile.mkdtemp(prefix="kiln-improve-")
    env = dict(os.environ, KILN_HOME=home)
    rng = random.Random(args.seed)
    report = {"budget": args.budget, "phases_s": {}}
    server = watcher = traffic = None
    t_start = time.time()
    try:
        t0 = time.time()
        sets = ["--set", f"epochs={b['epochs']}", "--set", "seed=0"]
        if b["limit"]:
            sets += ["--set", f"data.limit={b['limit']}"]
        run([kiln, "train", f"{repo}/examples/fashion-mnist/mlp.yaml", "--out", f"{home}/champion",
             *sets], env, stdout=subprocess.DEVNULL)
        run([kiln, "registry", "push", f"{home}/champion/bundle", "--name", "fmnist"], env,
            stdout=subprocess.DEVNULL)
        for alias in ("production", "candidate"):
            run([kiln, "registry", "alias", "set", "fmnist", alias, "1"], env,
                stdout=subprocess.DEVNULL)
        report["phases_s"]["train_champion"] = round(time.time() - t0, 1)

        server = subprocess.Popen(
            [kiln, "serve", "--model", "stable=fmnist@production", "--model",
             "canary=fmnist@candidate", "--route", "fmnist=stable:100,canary:0", "--port", "0",
             "--prediction-log", "inputs", "--poll-interval-ms", "200"],
            env=env, stdout=subprocess.PIPE, stderr=open(f"{home}/serve.log", "w"), text=True)
        port = None
        for line in server.stdout:
            m = re.search(r"ready on http://[0-9.]+:([0-9]+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise SystemExit("kiln serve did not start: " + open(f"{home}/serve.log").read())
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()

        images, labels = load("test")
        classes = json.load(open(f"{home}/champion/bundle/manifest.json"))["labels"]
        traffic = Traffic(port, "fmnist", images, labels, classes, rng)
        # Clean traffic: the champion's accuracy on what it was trained for.
        traffic.phase = "clean"
        traffic.thread.start()
        while traffic.count("clean") < b["eval_rows"] // 2:
            time.sleep(0.2)
        # The shift, with feedback for every answered row (the labelled share the loop learns
        # from; the held-out part is chosen by id hash inside kiln improve).
        t0 = time.time()
        traffic.phase, traffic.shifted, traffic.feedback_share = "shifted_before", True, 1.0
        while traffic.count("shifted_before") < b["feedback_rows"]:
            time.sleep(0.2)
        report["phases_s"]["shifted_traffic_before_check"] = round(time.time() - t0, 1)

        # The loop: checks every 2 s; the accuracy and drift triggers should fire. Answers during
        # the cycle (champion, then the canary's mix) count in neither "before" nor "after".
        t0 = time.time()
        traffic.phase = "shifted_during"
        watcher = subprocess.Popen(
            [kiln, "improve", "fmnist", "--server", f"http://127.0.0.1:{port}", "--route",
             "fmnist", "--champion-target", "stable", "--candidate-target", "canary",
             "--trigger", "accuracy", "--trigger", "drift", "--min-rows", str(b["min_rows"]),
             "--set", f"epochs={b['challenger_epochs']}",
             *[a for kv in args.improve_set for a in ("--set", kv)], "--steps", b["steps"],
             "--interval",
             b["interval"], "--min-requests", "10", "--max-error-rate", "0", "--watch",
             "--check-every", "2s", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=open(f"{home}/improve.log", "w"), text=True)
        decision = None
        for line in watcher.stdout:
            d = json.loads(line)
            if d.get("decision") in ("promoted", "rejected", "rolled_back", "failed"):
                decision = d
                break
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=30)
        report["phases_s"]["improve_cycle"] = round(time.time() - t0, 1)
        report["decision"] = decision
        # After the promotion: the shifted traffic, served by the new champion.
        traffic.phase = "shifted_after"
        t0 = time.time()
        while traffic.count("shifted_after") < b["eval_rows"]:
            time.sleep(0.2)
        report["phases_s"]["shifted_traffic_after"] = round(time.time() - t0, 1)
        traffic.stop = True
        traffic.thread.join(timeout=30)
        clean, n_clean = traffic.accuracy("clean")
        before, n_before = traffic.accuracy("shifted_before")
        during, n_during = traffic.accuracy("shifted_during")
        after, n_after = traffic.accuracy("shifted_after")
        report["accuracy"] = {"clean": round(clean, 4), "clean_rows": n_clean,
                              "shifted_before": round(before, 4), "shifted_before_rows": n_before,
                              "shifted_during_cycle": round(during, 4),
                              "shifted_during_cycle_rows": n_during,
                              "shifted_after": round(after, 4), "shifted_after_rows": n_after,
                              "gain_points": round(100 * (after - before), 1)}
        report["failed_requests"] = traffic.failed
        report["requests"] = len(traffic.results)
        report["feedback_sent"] = traffic.feedback_sent
        report["wall_s"] = round(time.time() - t_start, 1)
        report["detect_to_promote_s"] = report["phases_s"]["improve_cycle"]
        history = subprocess.run([kiln, "improve", "history", "fmnist", "--json"], env=env,
                                 capture_output=True, text=True, check=True).stdout
        report["history"] = json.loads(history)
    finally:
        if traffic:
            traffic.stop = True
        for p in (watcher, server):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"KILN_HOME kept: {home}", file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    if args.check:
        problems = []
        if not report.get("decision") or report["decision"].get("decision") != "promoted":
            problems.append("the loop did not promote a challenger: " +
                            json.dumps(report.get("decision"))[:500])
        if report.get("failed_requests", 1) != 0:
            problems.append(f"{report.get('failed_requests')} failed requests")
        gain = report.get("accuracy", {}).get("gain_points", 0)
        if gain < 100 * args.min_gain:
            problems.append(f"live accuracy on shifted traffic rose {gain} points, "
                            f"< {100 * args.min_gain}")
        if problems:
            print("FAILED: " + "; ".join(problems), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
