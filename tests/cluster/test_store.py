"""The cluster store on a real etcd: the lock, fencing, sealing, tokens, probes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from acmelb.acme.solvers import PendingChallenge
from acmelb.cluster.config import CertificateSpec, StoreConfig, parse_store_url
from acmelb.cluster.kv import EtcdKV, Put
from acmelb.cluster.secrets import SecretBox
from acmelb.cluster.store import ClusterStore, StoredCertificate
from acmelb.errors import LockLost, SecretKeyError, StoreUnavailable
from tests.cluster.conftest import LocalEtcd
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)
BOX = SecretBox(bytes(range(32)))


def store(etcd: LocalEtcd, box: SecretBox = BOX) -> ClusterStore:
    return ClusterStore(EtcdKV(etcd.store()), box)


def cert(version: int, key: bytes = b"-----BEGIN PRIVATE KEY-----\nx\n") -> StoredCertificate:
    return StoredCertificate(
        name="a.test",
        names=("a.test",),
        version=version,
        cert_pem=b"C",
        chain_pem=b"D",
        privkey_pem=key,
        not_before=1.0,
        not_after=2.0,
        issued_by="m1",
    )


def test_one_lock_per_certificate(local_etcd: LocalEtcd) -> None:
    s = store(local_etcd)
    first = s.try_lock("a.test", "m1", s.kv.grant(5))
    second = s.try_lock("a.test", "m2", s.kv.grant(5))
    assert first is not None and second is None
    assert s.lock_holder("a.test") == "m1"
    s.release(first)
    assert s.try_lock("a.test", "m2", s.kv.grant(5)) is not None


def test_a_holder_past_its_lease_is_fenced_off(local_etcd: LocalEtcd) -> None:
    """The SIGSTOP case in small: the lease runs out, a successor takes the lock, and the
    old holder's write is refused by the transaction, leaving the successor's work."""
    s = store(local_etcd)
    old = s.try_lock("a.test", "m1", s.kv.grant(2))
    assert old is not None
    deadline = time.monotonic() + 10
    while s.lock_holder("a.test") is not None:  # nobody refreshes the lease
        assert time.monotonic() < deadline
        time.sleep(0.1)
    new = s.try_lock("a.test", "m2", s.kv.grant(5))
    assert new is not None
    s.save_certificate(new, cert(2))
    with pytest.raises(LockLost):
        s.save_certificate(old, cert(1))
    with pytest.raises(LockLost):
        s.publish_tokens(old, [PendingChallenge("a.test", "tok", "tok.x", "u", "c")])
    current = s.current("a.test")
    assert current is not None and current.version == 2
    assert s.tokens() == {}


def test_private_keys_are_sealed_with_their_path(local_etcd: LocalEtcd) -> None:
    s = store(local_etcd)
    fence = s.try_lock("a.test", "m1", s.kv.grant(5))
    assert fence is not None
    s.save_certificate(fence, cert(1))
    raw = s.kv.get(s.kv.path("certs", "a.test", "current"))
    assert raw is not None and b"PRIVATE KEY" not in raw.value
    # the sealed value does not open under another path (associated data)
    sealed = BOX.seal(b"secret", "/acmelb/certs/a.test/current")
    with pytest.raises(SecretKeyError):
        BOX.open(sealed, "/acmelb/certs/b.test/current")
    # nor under another key
    with pytest.raises(SecretKeyError, match="wrong key file"):
        store(local_etcd, SecretBox(bytes(32))).current("a.test")


def test_the_key_check_refuses_a_second_key(local_etcd: LocalEtcd) -> None:
    store(local_etcd).verify_key()
    store(local_etcd).verify_key()  # the same key again: fine
    with pytest.raises(SecretKeyError):
        store(local_etcd, SecretBox(bytes(32))).verify_key()


def test_declarations_and_tokens(local_etcd: LocalEtcd) -> None:
    s = store(local_etcd)
    assert s.declare(CertificateSpec(names=("a.test", "www.a.test")))
    assert not s.declare(CertificateSpec(names=("a.test",)))
    assert [spec.names for spec in s.specs()] == [("a.test", "www.a.test")]
    fence = s.try_lock("a.test", "m1", s.kv.grant(2))
    assert fence is not None
    s.publish_tokens(fence, [PendingChallenge("a.test", "tok", "tok.thumb", "u", "c")])
    assert s.tokens() == {"tok": "tok.thumb"}
    deadline = time.monotonic() + 10
    while s.tokens():  # tokens live on the holder's lease
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_probe_requests_reach_their_member_only(local_etcd: LocalEtcd) -> None:
    s = store(local_etcd)
    fence = s.try_lock("a.test", "m1", s.kv.grant(5))
    assert fence is not None
    probe_id = s.ask_probe(fence, "m2", {"name": "a.test"})
    assert s.probe_requests("m3") == {}
    assert s.probe_requests("m2") == {probe_id: {"name": "a.test"}}
    s.answer_probe(probe_id, {"schema": "x"}, s.kv.grant(5))
    assert s.probe_requests("m2") == {}
    assert s.probe_result(probe_id) == {"schema": "x"}
    s.forget_probe(fence, probe_id)
    assert s.probe_result(probe_id) is None
    assert s.kv.get_prefix(s.kv.path("probes", "")) == []


def test_fenced_writes_are_all_or_nothing(local_etcd: LocalEtcd) -> None:
    s = store(local_etcd)
    fence = s.try_lock("a.test", "m1", s.kv.grant(5))
    assert fence is not None
    s.kv.fenced(fence, [Put("/acmelb/x", b"1"), Put("/acmelb/y", b"2")])
    assert s.kv.get("/acmelb/x") is not None and s.kv.get("/acmelb/y") is not None


def test_an_unreachable_store_is_one_clear_error(tmp_path: Path) -> None:
    dead = StoreConfig(endpoints=parse_store_url(f"etcd://127.0.0.1:{free_port()}"), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="did not answer"):
        EtcdKV(dead).get("/acmelb/x")
    assert time.monotonic() - started < 5
