"""etcd3gw (Debian's python3-etcd3gw), a Python client of etcd's HTTP gateway, against Keel.

Run by tests/e2e/gateway.rs as `python3 etcd3gw_client.py HOST PORT...`: every step asserts
what etcd would answer, and the script exits non-zero with the failed assertion otherwise.
"""

import signal
import sys
import threading

from etcd3gw.client import Etcd3Client


def client(host, port):
    # Debian's etcd3gw 2.0 defaults to etcd 3.3's /v3alpha/; Keel serves etcd 3.4's paths.
    return Etcd3Client(host=host, port=int(port), api_path="/v3/", timeout=10)


def main():
    # A call that hangs (a watch that never answers) fails the test instead of stalling CI:
    # SIGALRM's default action ends the process.
    signal.alarm(120)
    host, ports = sys.argv[1], sys.argv[2:]
    clients = [client(host, port) for port in ports]
    first = clients[0]
    assert first.status()["version"] == "3.4.0"
    urls = sorted(member["clientURLs"][0] for member in first.members())
    assert urls == sorted(f"http://{host}:{port}" for port in ports), urls

    # Every member takes writes (followers forward them to the leader).
    for index, each in enumerate(clients):
        assert each.put(f"/gw/{index}", f"v{index}") is True
    assert sorted(value for value, _ in first.get_prefix("/gw/")) == [b"v0", b"v1", b"v2"][: len(ports)]
    assert first.get("/gw/0") == [b"v0"]

    # create is a transaction: put only if the key does not exist.
    assert first.create("/gw/once", "a") is True
    assert first.create("/gw/once", "b") is False
    assert first.get("/gw/once") == [b"a"]

    # Leases: grant, attach a key, refresh, list its keys, revoke (the key goes with it).
    lease = first.lease(ttl=30)
    assert 0 < lease.ttl() <= 30
    assert first.put("/gw/leased", "x", lease=lease) is True
    assert lease.refresh() == 30
    assert lease.keys() == [b"/gw/leased"]
    assert lease.revoke() is True
    assert first.get("/gw/leased") == []

    # A watch sees a put and a delete made through another member.
    events, cancel = first.watch_prefix("/gw/watched/")
    seen = []
    ready = threading.Event()

    def consume():
        for event in events:
            seen.append((event.get("type", "PUT"), event["kv"]["key"]))
            if len(seen) == 2:
                ready.set()
                return

    threading.Thread(target=consume, daemon=True).start()
    # The watch is created before the gateway answers its first line; give it that moment.
    threading.Event().wait(0.5)
    other = clients[-1]
    other.put("/gw/watched/k", "1")
    other.delete("/gw/watched/k")
    assert ready.wait(10), seen
    cancel()
    assert seen == [("PUT", b"/gw/watched/k"), ("DELETE", b"/gw/watched/k")], seen

    assert first.delete_prefix("/gw/") is True
    assert first.get_prefix("/gw/") == []
    print("ok")


if __name__ == "__main__":
    main()
