"""Patroni's etcd3 DCS (Debian's patroni 3.0) against Keel's JSON gateway, without PostgreSQL.

Run by tests/e2e/gateway.rs as `python3 patroni_dcs.py HOST:PORT,... [CA CERT KEY]`, over
mutual TLS when the three PEM files are given. Patroni keeps its
cluster state in the DCS and talks to etcd 3.4 through the HTTP gateway: two members race to
initialize the cluster and to take the leader key (a transaction on create revision 0, under a
lease), the leader updates its keys, a replica's member key reaches the leader's cache through
its prefix watch, and the leader key changes hands once released. Every step asserts what
Patroni expects from etcd; the script exits non-zero otherwise.
"""

import base64
import signal
import sys
import time

from patroni.dcs.etcd3 import Etcd3


def dcs(hosts, name, tls):
    config = {'hosts': hosts, 'scope': 'keel', 'name': name, 'ttl': 30, 'loop_wait': 10,
              'retry_timeout': 10, 'namespace': '/service/'}
    if tls:
        config.update(protocol='https', cacert=tls[0], cert=tls[1], key=tls[2])
    return Etcd3(config)


def member(port, role):
    return {'conn_url': f'postgres://127.0.0.1:{port}/postgres', 'api_url': f'http://127.0.0.1:{port}/patroni',
            'state': 'running', 'role': role}


def eventually(check, what):
    """Patroni reads its cluster from a cache its watch keeps: other members' writes show after a moment."""
    deadline = time.time() + 10
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.1)


def cached(node):
    return [value['key'] for value in node._client._kv_cache.copy()]


def main():
    # A call that hangs (a watch that never answers) fails the test instead of stalling CI:
    # SIGALRM's default action ends the process.
    signal.alarm(120)
    hosts, tls = sys.argv[1].split(','), sys.argv[2:5]
    first, second = dcs(hosts, 'pg1', tls), dcs(hosts[::-1], 'pg2', tls)
    assert first._client._cluster_version == (3, 4, 0), first._client._cluster_version

    assert first.initialize(create_new=True, sysid='7000000000000000001')
    assert not second.initialize(create_new=True, sysid='7000000000000000002'), 'initialized twice'
    assert first.touch_member(member(5432, 'master'))
    assert first.attempt_to_acquire_leader()
    assert first.set_config_value('{"ttl": 30}')
    assert first.update_leader(12345)

    eventually(lambda: (lambda c: c.leader and c.leader.name == 'pg1' and c.config and c.config.data == {'ttl': 30})(
        second.get_cluster()), 'pg2 never saw pg1 lead with its configuration')
    assert second.get_cluster().initialize == '7000000000000000001'
    assert not second.attempt_to_acquire_leader(), 'the leader key was taken twice'

    # The replica's member key reaches the leader's cache through the leader's prefix watch
    # (the cache holds etcd's JSON: keys in base64).
    assert second.touch_member(member(5433, 'replica'))
    wanted = base64.b64encode(b'/service/keel/members/pg2').decode()
    eventually(lambda: wanted in cached(first), 'the member key of pg2 never reached the cache of pg1')
    assert sorted(m.name for m in first.get_cluster().members) == ['pg1', 'pg2']

    assert first.delete_leader()
    assert second.attempt_to_acquire_leader(), 'the released leader key could not be taken'
    eventually(lambda: (lambda c: c.leader and c.leader.name == 'pg2')(first.get_cluster()), 'pg1 never saw pg2 lead')
    assert first.delete_cluster()
    eventually(lambda: not cached(second), 'the cache of pg2 never saw the cluster deleted')
    print('ok')


if __name__ == '__main__':
    main()
