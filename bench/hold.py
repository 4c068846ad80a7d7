#!/usr/bin/env python3
"""Holds many idle mutual-TLS connections to the Fleetward gateway, its MQTT front door or mosquitto,
for bench/connections.sh and bench/mqtt_fleet.sh.

  hold.py hold   --target gateway|mosquitto|mqtt --port P --ca CA.pem --certs DIR --count N --pid PID[,PID…]
  hold.py cutoff [--target gateway|mqtt] --port P --ca CA.pem --certs DIR --count N --api URL --token T
                 --suspend K [--action suspend|revoke]

Targets: gateway (GET /v1/whoami), mosquitto (MQTT CONNECT, client id <device>-<n>, several per
device), mqtt (MQTT CONNECT with the device ID as client id: one session per device, as the front
door requires).
  hold.py requests --port P --ca CA.pem --certs DIR --count C --seconds S

Each connection completes the TLS 1.3 handshake with a device certificate from DIR (files
<id>.pem with the chain and <id>.key), proves it was admitted (gateway: GET /v1/whoami on the
kept-alive connection; mosquitto: MQTT CONNECT and CONNACK) and then stays idle with a read
pending, so the moment the server closes it is seen.

hold: prints the server's resident memory before the first connection, after 200 and after all
of them, and the growth per connection between the last two; then checks every connection is
still open after a pause.
requests: C kept-alive connections each send GET /v1/whoami one after another for S seconds;
prints the answers per second (count only 200s).
cutoff: suspends K devices through the management API (each call timed from just before it is
sent) and prints how long their connections took to close: p50, p99, max.
"""
import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import time
import urllib.request


def rss_kib(pids):
    """The resident memory of one process, or the sum over a comma-separated list."""
    total = 0
    for pid in str(pids).split(","):
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Held:
    def __init__(self, device, reader, writer):
        self.device = device
        self.reader = reader
        self.writer = writer
        self.closed_at = None
        self.watch = asyncio.get_running_loop().create_task(self.wait_for_close())

    async def wait_for_close(self):
        try:
            while await self.reader.read(4096):
                pass
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        self.closed_at = time.monotonic()


async def read_http_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length)
    status = int(head.split(b" ")[1])
    return status, body


def mqtt_connect(client_id):
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x00"  # MQTT 3.1.1, clean session, no keepalive
    payload = len(cid).to_bytes(2, "big") + cid
    remaining = len(variable) + len(payload)
    encoded = b""
    while True:
        byte = remaining % 128
        remaining //= 128
        encoded += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return b"\x10" + encoded + variable + payload


async def open_one(args, contexts, devices, index, gate, check_device=True):
    device = devices[index % len(devices)]
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", args.port, ssl=contexts[device], server_hostname="127.0.0.1"), 60)
        if args.target in ("mosquitto", "mqtt"):
            # mqtt: one session per device, the device ID as client id (the front door's rule).
            writer.write(mqtt_connect(device if args.target == "mqtt" else f"{device}-{index}"))
            await writer.drain()
            connack = await asyncio.wait_for(reader.readexactly(4), 60)
            if connack[0] != 0x20 or connack[3] != 0:
                raise RuntimeError(f"CONNACK refused: {connack.hex()}")
        else:
            writer.write(b"GET /v1/whoami HTTP/1.1\r\nHost: gateway\r\n\r\n")
            await writer.drain()
            status, body = await asyncio.wait_for(read_http_response(reader), 60)
            if status != 200 or (check_device and json.loads(body)["device"] != device):
                raise RuntimeError(f"whoami answered {status}: {body[:100]}")
    return Held(device, reader, writer)


async def open_many(args, contexts, devices, start, stop, gate, check_device=True):
    results = await asyncio.gather(
        *(open_one(args, contexts, devices, i, gate, check_device) for i in range(start, stop)), return_exceptions=True)
    held = [r for r in results if isinstance(r, Held)]
    errors = [r for r in results if not isinstance(r, Held)]
    if errors:
        print(f"  {len(errors)} connections failed, e.g. {errors[0]!r}", file=sys.stderr)
    return held


def load_contexts(args):
    devices = sorted(name[:-4] for name in os.listdir(args.certs) if name.endswith(".pem") and name.startswith(args.prefix))
    contexts = {}
    for device in devices:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(os.path.join(args.certs, device + ".pem"), os.path.join(args.certs, device + ".key"))
        contexts[device] = context
    return devices, contexts


async def hold(args):
    devices, contexts = load_contexts(args)
    gate = asyncio.Semaphore(args.parallel)
    before = rss_kib(args.pid)
    warm = min(200, args.count)
    held = await open_many(args, contexts, devices, 0, warm, gate)
    await asyncio.sleep(2)
    at_warm = rss_kib(args.pid)
    started = time.monotonic()
    held += await open_many(args, contexts, devices, warm, args.count, gate)
    opening = time.monotonic() - started
    await asyncio.sleep(5)
    at_all = rss_kib(args.pid)
    await asyncio.sleep(args.pause)
    open_now = sum(1 for h in held if h.closed_at is None)
    per = (at_all - at_warm) / max(1, len(held) - warm)
    print(json.dumps({
        "target": args.target, "requested": args.count, "connected": len(held), "stillOpenAfterPause": open_now,
        "pauseSeconds": args.pause, "openSeconds": round(opening, 1), "rssKiBBefore": before, "rssKiBAt200": at_warm,
        "rssKiBAtAll": at_all, "kibPerConnection": round(per, 1),
    }))
    for h in held:
        h.writer.transport.abort()


async def cutoff(args):
    devices, contexts = load_contexts(args)
    gate = asyncio.Semaphore(args.parallel)
    held = await open_many(args, contexts, devices, 0, args.count, gate)
    await asyncio.sleep(2)
    victims = devices[: args.suspend]
    loop = asyncio.get_running_loop()
    sent = {}

    def suspend(device):
        request = urllib.request.Request(
            f"{args.api}/api/v1/devices/{device}/{args.action}", method="POST", data=b"{}",
            headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"})
        sent[device] = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    for device in victims:
        await loop.run_in_executor(None, suspend, device)
    deadline = time.monotonic() + 10
    targets = [h for h in held if h.device in sent]
    while time.monotonic() < deadline and any(h.closed_at is None for h in targets):
        await asyncio.sleep(0.01)
    delays = sorted((h.closed_at - sent[h.device]) * 1000 for h in targets if h.closed_at is not None)
    others_closed = sum(1 for h in held if h.device not in sent and h.closed_at is not None)
    result = {
        "connections": len(held), "suspendedDevices": len(victims), "theirConnections": len(targets), "closed": len(delays),
        "othersClosed": others_closed,
    }
    if delays:
        result.update({
            "p50ms": round(statistics.median(delays), 1), "p99ms": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 1),
            "maxms": round(delays[-1], 1),
        })
    print(json.dumps(result))
    for h in held:
        h.writer.transport.abort()


async def requests(args):
    devices, contexts = load_contexts(args)
    gate = asyncio.Semaphore(args.parallel)
    # The answers, not the watcher, read from these connections.
    held = await open_many(args, contexts, devices, 0, args.count, gate, check_device=False)
    for h in held:
        h.watch.cancel()
    answered = 0
    failed = 0
    stop = time.monotonic() + args.seconds

    async def loop(h):
        nonlocal answered, failed
        while time.monotonic() < stop:
            h.writer.write(b"GET /v1/whoami HTTP/1.1\r\nHost: gateway\r\n\r\n")
            status, _ = await read_http_response(h.reader)
            if status == 200:
                answered += 1
            else:
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(h) for h in held))
    elapsed = time.monotonic() - started
    print(json.dumps({"connections": len(held), "answers": answered, "failed": failed, "seconds": round(elapsed, 2),
                      "perSecond": round(answered / elapsed)}))
    for h in held:
        h.writer.transport.abort()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "cutoff", "requests"])
    parser.add_argument("--target", choices=["gateway", "mosquitto", "mqtt"], default="gateway")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--pid", default=str(os.getpid()), help="a PID, or several separated by commas (memory summed)")
    parser.add_argument("--pause", type=float, default=10)
    parser.add_argument("--api")
    parser.add_argument("--token")
    parser.add_argument("--suspend", type=int, default=10, help="how many devices cutoff suspends or revokes")
    parser.add_argument("--prefix", default="", help="only the devices whose ID starts with this")
    parser.add_argument("--action", choices=["suspend", "revoke"], default="suspend")
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    asyncio.run({"hold": hold, "cutoff": cutoff, "requests": requests}[args.mode](args))


if __name__ == "__main__":
    main()
