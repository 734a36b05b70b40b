"""Patroni's etcd3 DCS (Debian's patroni 3.0) against Keel's JSON gateway, without PostgreSQL.

Run by tests/e2e/gateway.rs as `python3 patroni_dcs.py HOST:PORT,...`. Patroni keeps its
cluster state in the DCS and talks to etcd 3.4 through the HTTP gateway: two members race to
initialize the cluster and to take the leader key (a transaction on create revision 0, under a
lease), the leader updates its keys, a replica's member key reaches the leader's cache through
its prefix watch, and the leader key changes hands once released. Every step asserts what
Patroni expects from etcd; the script exits non-zero otherwise.
"""

import base64
import sys
import time

from patroni.dcs.etcd3 import Etcd3


def dcs(hosts, name):
    config = {'hosts': hosts, 'scope': 'keel', 'name': name, 'ttl': 30, 'loop_wait': 10,
              'retry_timeout': 10, 'namespace': '/service/'}
    return Etcd3(config)


def member(port, role):
    return {'conn_url': f'postgres://127.0.0.1:{port}/postgres', 'api_url': f'http://127.0.0.1:{port}/patroni',
            'state': 'running', 'role': role}


def cached(node):
    return [value['key'] for value in node._client._kv_cache.copy()]


def main():
    hosts = sys.argv[1].split(',')
    first, second = dcs(hosts, 'pg1'), dcs(hosts[::-1], 'pg2')
    assert first._client._cluster_version == (3, 4, 0), first._client._cluster_version

    assert first.initialize(create_new=True, sysid='7000000000000000001')
    assert not second.initialize(create_new=True, sysid='7000000000000000002'), 'initialized twice'
    assert first.touch_member(member(5432, 'master'))
    assert first.attempt_to_acquire_leader()
    assert first.set_config_value('{"ttl": 30}')
    assert first.update_leader(12345)

    cluster = second.get_cluster()
    assert cluster.initialize == '7000000000000000001', cluster.initialize
    assert cluster.leader.name == 'pg1', cluster.leader
    assert cluster.config.data == {'ttl': 30}, cluster.config.data
    assert not second.attempt_to_acquire_leader(), 'the leader key was taken twice'

    # The replica's member key reaches the leader's cache through the leader's prefix watch
    # (the cache holds etcd's JSON: keys in base64).
    assert second.touch_member(member(5433, 'replica'))
    wanted = base64.b64encode(b'/service/keel/members/pg2').decode()
    deadline = time.time() + 10
    while time.time() < deadline and wanted not in cached(first):
        time.sleep(0.1)
    assert wanted in cached(first), cached(first)
    assert sorted(m.name for m in first.get_cluster().members) == ['pg1', 'pg2']

    assert first.delete_leader()
    assert second.attempt_to_acquire_leader(), 'the released leader key could not be taken'
    assert first.get_cluster().leader.name == 'pg2'
    assert first.delete_cluster()
    # The other member's cache learns of the deletion through its own watch.
    deadline = time.time() + 10
    while time.time() < deadline and cached(second):
        time.sleep(0.1)
    assert not cached(second), cached(second)
    print('ok')


if __name__ == '__main__':
    main()
