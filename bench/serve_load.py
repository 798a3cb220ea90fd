"""Load test of `diffuse8 serve`: N concurrent txt2img requests on the default model, plus oversize and
malformed requests sent while the queue is full.

Starts the server itself (so that it can read its resident memory from /proc), on a free port with basic auth:
    python3 bench/serve_load.py .build/release/diffuse8 [--requests 64] [--steps 20] [--max-queue 16]

Checks (exit status 1 when one fails): every txt2img is answered 200 or 503 (503 with Retry-After), the server
survives; each bad request (width 100000, steps 10^7, invalid JSON, a 50 MB body, a wrong password) is answered
4xx in under 100 ms and never reaches the queue (the metrics count no extra images or jobs). Prints latency
percentiles, images/s and peak RSS. Only the Python standard library is used.
"""

import argparse
import base64
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

AUTH = ("bench", "secret")
PROMPT = "a large red circle above a small blue square on a white background"


def headers(auth=AUTH):
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {token}"}


def request(port, method, path, body=None, auth=AUTH, timeout=600):
    """(status, response headers, body bytes, seconds)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers(auth))
        response = connection.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), data, time.perf_counter() - start
    finally:
        connection.close()


def huge_body_request(port, size):
    """POSTs a body of `size` bytes, declared in Content-Length, and times the arrival of the status line (the
    server may answer before the body is sent; the send then fails, which is fine)."""
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {headers()['Authorization']}\r\nContent-Length: {size}\r\n\r\n").encode()
    sock.sendall(head)

    def send_body():
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(size >> 20):
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed

    sender = threading.Thread(target=send_body)
    sender.start()
    status_line = sock.makefile("rb").readline()
    seconds = time.perf_counter() - start
    sock.close()
    sender.join()
    return int(status_line.split()[1]), seconds


def metric(port, name):
    status, _, body, _ = request(port, "GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def error_count(port, kind):
    _, _, body, _ = request(port, "GET", "/metrics")
    match = re.search(r'diffuse8_errors_total\{kind="%s"\} (\S+)' % kind, body.decode())
    return float(match.group(1)) if match else 0.0


class RSSSampler(threading.Thread):
    """Samples the server's VmRSS every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def rss_mib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def run(self):
        while self.running:
            try:
                self.samples.append(self.rss_mib())
            except OSError:
                return
            time.sleep(0.02)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-queue", type=int, default=16)
    args = parser.parse_args()

    server = subprocess.Popen([args.binary, "serve", "--port", "0", "--api-auth", ":".join(AUTH),
                               "--max-queue", str(args.max_queue), "--log-level", "warning"],
                              stdout=subprocess.PIPE, text=True)
    failures = []
    try:
        line = server.stdout.readline()  # "listening on http://127.0.0.1:PORT", printed once the port is bound
        port = int(line.rsplit(":", 1)[1])
        for _ in range(100):  # /internal/ping: bounded retries
            try:
                if request(port, "GET", "/internal/ping")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"prompt": PROMPT, "steps": args.steps, "cfg_scale": 5, "seed": 0}).encode()
        status, _, _, warm = request(port, "POST", "/sdapi/v1/txt2img", body)
        assert status == 200, status
        sampler = RSSSampler(server.pid)
        rss_idle = sampler.rss_mib()
        sampler.start()

        results = [None] * args.requests
        def one(i):
            b = json.dumps({"prompt": PROMPT, "steps": args.steps, "cfg_scale": 5, "seed": i}).encode()
            try:
                results[i] = request(port, "POST", "/sdapi/v1/txt2img", b)
            except Exception as error:  # noqa: BLE001 - a failure to answer is what this test looks for
                results[i] = (None, {}, str(error).encode(), 0.0)

        images_before = metric(port, "diffuse8_images_generated_total")
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.requests)]
        start = time.perf_counter()
        for t in threads:
            t.start()

        # While the queue is full: bad requests must be refused fast, without reaching it.
        while metric(port, "diffuse8_queue_depth") < min(args.max_queue, args.requests - 1):
            time.sleep(0.01)
        bad = {
            "width 100000": lambda: request(port, "POST", "/sdapi/v1/txt2img", json.dumps({"width": 100000}).encode()),
            "steps 10^7": lambda: request(port, "POST", "/sdapi/v1/txt2img", json.dumps({"steps": 10**7}).encode()),
            "invalid JSON": lambda: request(port, "POST", "/sdapi/v1/txt2img", b'{"prompt": "unterminated'),
            "wrong password": lambda: request(port, "POST", "/sdapi/v1/txt2img", body, auth=("bench", "wrong")),
            "50 MB body": lambda: huge_body_request(port, 50 << 20),
        }
        bad_results = {}
        for name, send in bad.items():
            outcome = send()
            status, seconds = (outcome[0], outcome[-1])
            bad_results[name] = (status, seconds)
            if not (400 <= status < 500 and seconds < 0.1):
                failures.append(f"{name}: {status} in {seconds * 1000:.1f} ms")

        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        sampler.running = False
        sampler.join()
        images_after = metric(port, "diffuse8_images_generated_total")

        statuses = [r[0] for r in results]
        ok = [r for r in results if r[0] == 200]
        busy = [r for r in results if r[0] == 503]
        if len(ok) + len(busy) != args.requests:
            failures.append(f"unexpected answers: {sorted(set(map(str, statuses)))}")
        if any("Retry-After" not in r[1] for r in busy):
            failures.append("a 503 without Retry-After")
        if images_after - images_before != len(ok):
            failures.append(f"images generated {images_after - images_before} != 200 answers {len(ok)}")
        if server.poll() is not None:
            failures.append("the server died")

        def ms(values):
            return f"p50 {percentile(values, 50) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms"

        print(f"machine: {os.cpu_count()} CPUs; model: default; {args.steps} steps, native size; queue {args.max_queue}")
        print(f"warm-up (single request): {warm * 1000:.0f} ms")
        print(f"{args.requests} concurrent txt2img: {len(ok)} x 200, {len(busy)} x 503 in {wall:.2f} s wall")
        print(f"  200 latency: {ms([r[3] for r in ok])}; 503 latency: {ms([r[3] for r in busy]) if busy else '-'}")
        print(f"  throughput: {len(ok) / wall:.2f} images/s")
        print(f"  RSS: {rss_idle:.0f} MiB idle after warm-up, peak {max(sampler.samples):.0f} MiB under load")
        for name, (status, seconds) in bad_results.items():
            print(f"  {name}: {status} in {seconds * 1000:.1f} ms")
        for kind in ["validation", "unauthorized", "body_too_large", "queue_full"]:
            print(f"  diffuse8_errors_total{{kind={kind}}} = {error_count(port, kind):.0f}")
    finally:
        server.terminate()
        try:
            code = server.wait(timeout=600)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
        if code != 0:
            failures.append(f"server exit status after SIGTERM: {code}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
