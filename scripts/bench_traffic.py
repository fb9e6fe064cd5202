"""Bounded traffic between two guest namespaces of the sandbox: TCP throughput, small-packet rate, connect latency.

Every run is bounded in time (iperf3 -t, socket timeouts, subprocess timeouts) and targets only a lab address.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench_lab import CONNECT_PORT, IPERF_PORT, in_ns


def _iperf(src: str, dst: str, dst_addr: str, seconds: float, extra: list[str]) -> dict:
    server = subprocess.Popen(in_ns(dst, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # the server needs a moment to listen
            res = subprocess.run(in_ns(src, "iperf3", "-c", dst_addr, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                                       *extra), capture_output=True, text=True, timeout=seconds + 15)
            data = json.loads(res.stdout or "{}")
            if "connect" not in data.get("error", "").lower() and "refused" not in data.get("error", "").lower():
                break
            time.sleep(0.05)
        if data.get("error"):
            raise RuntimeError(f"iperf3 {src} -> {dst_addr}: {data['error']}")
        return data
    finally:
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def tcp_throughput(src: str, dst: str, dst_addr: str, seconds: float) -> float:
    """Received TCP throughput in Gbit/s (one stream)."""
    data = _iperf(src, dst, dst_addr, seconds, [])
    return round(data["end"]["sum_received"]["bits_per_second"] / 1e9, 3)


def udp_rate(src: str, dst: str, dst_addr: str, seconds: float) -> float:
    """Received rate of 64-byte UDP datagrams sent as fast as one sender can, in thousands of packets per second."""
    data = _iperf(src, dst, dst_addr, seconds, ["-u", "-l", "64", "-b", "0"])
    s = data["end"]["sum"]
    return round((s["packets"] - s["lost_packets"]) / s["seconds"] / 1000, 1)


def udp_cost(src: str, dst: str, dst_addr: str, seconds: float) -> dict:
    """64-byte UDP as fast as one sender can: received kpps, and the sender's CPU time per datagram sent (µs).

    The CPU time is the better measure on a shared machine: the whole path up to the receiving socket (every veth
    hop, bridge, netfilter hook and rule) runs in the sending task's softirq and is charged to it (this kernel has
    no IRQ time accounting), and it does not depend on how much CPU other work leaves the sender; kpps does.
    """
    data = _iperf(src, dst, dst_addr, seconds, ["-u", "-l", "64", "-b", "0"])
    s, cpu = data["end"]["sum"], data["end"]["cpu_utilization_percent"]
    return {"kpps": round((s["packets"] - s["lost_packets"]) / s["seconds"] / 1000, 1),
            "cpu_us": round(cpu["host_total"] / 100 * s["seconds"] / max(s["packets"], 1) * 1e6, 2)}


_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(512); s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        c, _ = s.accept(); c.close()
    except socket.timeout:
        pass
"""

_CLIENT = """
import json, socket, sys, time
addr, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
lat, end = [], time.monotonic() + limit
while len(lat) < n and time.monotonic() < end:
    s = socket.socket(); s.settimeout(1.0)
    t = time.perf_counter(); s.connect((addr, port)); lat.append(time.perf_counter() - t)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00"); s.close()
print(json.dumps(lat))
"""


def connect_latency(src: str, dst: str, dst_addr: str, count: int, seconds: float) -> dict:
    """TCP connect() latency in microseconds (median, p99) over up to `count` connections within `seconds`.

    Each connection is new (SYN walks the rules, not the ESTABLISHED shortcut) and closed with RST (no TIME_WAIT).
    """
    server = subprocess.Popen(in_ns(dst, sys.executable, "-c", _SERVER, str(CONNECT_PORT), str(seconds + 3)),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        server.stdout.readline()
        res = subprocess.run(in_ns(src, sys.executable, "-c", _CLIENT, dst_addr, str(CONNECT_PORT), str(count),
                                   str(seconds)), capture_output=True, text=True, timeout=seconds + 10)
        if res.returncode != 0:
            raise RuntimeError(f"connect loop {src} -> {dst_addr}: {res.stderr.strip()[-300:]}")
        lat = sorted(x * 1e6 for x in json.loads(res.stdout))
    finally:
        server.kill()
        server.wait()
    return {"n": len(lat), "median_us": round(statistics.median(lat), 1),
            "p99_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)}


def measure(src: str, dst: str, dst_addr: str, seconds: float, connects: int) -> dict:
    """All three numbers for one path."""
    return {
        "tcp_gbps": tcp_throughput(src, dst, dst_addr, seconds),
        # A single-threaded sender on 2 cores is noisy: the better of two runs.
        "udp_kpps": max(udp_rate(src, dst, dst_addr, seconds) for _ in range(2)),
        "connect": connect_latency(src, dst, dst_addr, connects, min(seconds * 2, 3.0)),
    }


def safe_measure(src: str, dst: str, dst_addr: str, seconds: float, connects: int) -> dict:
    """measure(), or None values and the error when the path carries no traffic (the run goes on)."""
    try:
        return measure(src, dst, dst_addr, seconds, connects)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        return {"tcp_gbps": None, "udp_kpps": None, "connect": {"n": 0, "median_us": None, "p99_us": None},
                "error": str(e)[:200]}
