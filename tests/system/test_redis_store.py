"""The Redis store against real redis-server processes: layout, TTLs, NX, URLs (password, user,
db, TLS), locks, outages, forks, and the optimizer sharing it across two app instances."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
import redis
from starlette.testclient import TestClient

from handler.contract.config import load_images_config
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator, build_store
from handler.http.app import create_app
from handler.model import Pointer, Variant
from handler.stores.base import Locking
from handler.stores.guarded import GuardedStore
from handler.stores.memory import MemoryStore
from handler.stores.records import encode_pointer, encode_variant
from handler.stores.redis import POINTER_GRACE, RedisStore
from handler.stores.tiered import HeldVariants
from kit.paths import REPO
from kit.serving import serving
from kit.support import HANG_SECONDS, App, Clock, counting_threads, free_port, wait_for

VARIANT = Variant(b"RIFF....WEBPVP8 body", "image/webp", "etag-abc", "optimized")
RedisServer = Callable[..., AbstractContextManager[str]]


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex}/"


def pointer(expire_at: float) -> Pointer:
    return Pointer("ab" * 32, "ZXRhZw", '"etag"', 3600, expire_at)


def raises(call: Callable[[], object]) -> BaseException:
    """What ``call`` raised. How soon is not timed here: the client's timeouts and its single
    attempt bound it (``test_calls_time_out_in_a_second_and_are_never_retried``)."""
    with pytest.raises(redis.RedisError) as caught:
        call()
    return caught.value


def test_calls_time_out_in_a_second_and_are_never_retried() -> None:
    pool = RedisStore("redis://127.0.0.1:6379/0").client.connection_pool
    options = pool.connection_kwargs
    assert (options["socket_connect_timeout"], options["socket_timeout"]) == (1.0, 1.0)
    assert options["retry_on_timeout"] is False
    assert options["retry"].get_retries() == 0


def accepted(listening: socket.socket) -> int:
    """How many connections wait in ``listening``'s backlog (closed as they are counted)."""
    count = 0
    listening.setblocking(False)
    try:
        while True:
            connection, _ = listening.accept()
            connection.close()
            count += 1
    except BlockingIOError:
        return count
    finally:
        listening.setblocking(True)


def test_layout_values_and_ttls(redis_url: str) -> None:
    now = 1_000_000.0
    store = RedisStore(redis_url, "site/", variant_ttl=600, clock=lambda: now)
    store.put_variant("hash/640w-75q-webp-p1", VARIANT)
    store.put_pointer("fresh", pointer(now + 100))
    store.put_pointer("stale", pointer(now - 100))
    store.put_pointer("far", pointer(now + 10**12))  # a hostile upstream max-age

    client = store.client
    variant_key = "site/_next/image-variants/hash/640w-75q-webp-p1"
    assert client.get(variant_key) == encode_variant(VARIANT)
    assert client.get("site/_next/image-pointers/fresh") == encode_pointer(pointer(now + 100))
    assert 0 < client.ttl(variant_key) <= 600
    fresh_ttl = client.ttl("site/_next/image-pointers/fresh")
    assert 100 + POINTER_GRACE - 2 <= fresh_ttl <= 100 + POINTER_GRACE
    assert POINTER_GRACE - 2 <= client.ttl("site/_next/image-pointers/stale") <= POINTER_GRACE
    assert client.ttl("site/_next/image-pointers/far") <= 600 + POINTER_GRACE
    assert RedisStore(redis_url, "site/").get_pointer("stale") == pointer(now - 100)


def test_the_first_writer_of_a_variant_is_kept_with_its_ttl(redis_url: str) -> None:
    prefix = unique_prefix()
    winner = Variant(b"first", "image/webp", "e1", "optimized")
    RedisStore(redis_url, prefix, variant_ttl=600).put_variant("k", winner)
    late = RedisStore(redis_url, prefix, variant_ttl=10**6)
    late.put_variant("k", Variant(b"second", "image/webp", "e2", "optimized"))  # no error
    assert late.get_variant("k") == winner
    assert 0 < late.client.ttl(late.variant_redis_key("k")) <= 600


def test_a_variant_lost_from_redis_is_written_back(redis_url: str) -> None:
    store = RedisStore(redis_url, unique_prefix())
    store.put_variant("k", VARIANT)
    store.client.delete(store.variant_redis_key("k"))  # evicted under maxmemory, or FLUSHDB
    assert store.get_variant("k") is None
    store.put_variant("k", VARIANT)
    assert store.get_variant("k") == VARIANT


def test_password_user_and_db_come_from_the_url(redis_server: RedisServer) -> None:
    with redis_server("--requirepass", "s3cr@t/pw") as url:
        address = url.removeprefix("redis://").removesuffix("/0")
        with_password = RedisStore(f"redis://:s3cr%40t%2Fpw@{address}/3")
        with_password.put_variant("k", VARIANT)
        assert with_password.get_variant("k") == VARIANT
        assert with_password.client.connection_pool.connection_kwargs["db"] == 3
        db3 = redis.Redis.from_url(f"redis://:s3cr%40t%2Fpw@{address}/3")
        assert db3.exists(with_password.variant_redis_key("k")) == 1
        db0 = redis.Redis.from_url(f"redis://:s3cr%40t%2Fpw@{address}/0")
        assert db0.exists(with_password.variant_redis_key("k")) == 0

        error = raises(RedisStore(url).ping)
        assert isinstance(error, redis.AuthenticationError)
        error = raises(RedisStore(f"redis://:wrong@{address}/0").ping)
        assert isinstance(error, redis.AuthenticationError)

        db0.acl_setuser(
            "optimizer", enabled=True, passwords=["+u-pw"], keys=["*"], commands=["+@all"]
        )
        as_user = RedisStore(f"redis://optimizer:u-pw@{address}/0")
        as_user.put_pointer("p", pointer(time.time() + 60))
        assert as_user.client.acl_whoami() == "optimizer"
        assert as_user.get_pointer("p") is not None
        error = raises(RedisStore(f"redis://optimizer:s3cr%40t%2Fpw@{address}/0").ping)
        assert isinstance(error, redis.AuthenticationError)


def write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: (certificate, key) as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_rediss_url_speaks_tls_and_verifies_the_server(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cert, key = write_self_signed_certificate(tmp_path)
    tls_port = free_port()
    flags = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert)]
    flags += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    with redis_server(*flags, "--tls-auth-clients", "no"):
        store = RedisStore(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}", unique_prefix())
        store.put_variant("k", VARIANT)
        assert store.get_variant("k") == VARIANT
        assert store.client.connection_pool.connection_class is redis.SSLConnection

        untrusted = RedisStore(f"rediss://127.0.0.1:{tls_port}/0")  # the system CAs only
        assert "certificate verify failed" in str(raises(untrusted.ping))
        raises(RedisStore(f"redis://127.0.0.1:{tls_port}/0").ping)  # plain to TLS


def test_malformed_urls_and_settings_fail_at_start_up() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisStore("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError):
        RedisStore("redis://127.0.0.1:port/0")
    with pytest.raises(ValueError, match="TTL"):
        RedisStore("redis://127.0.0.1:6379/0", variant_ttl=0)
    with pytest.raises(ValueError, match="NEXT_IMAGE_REDIS_URL"):
        build_store(Settings(store="redis"))


def test_locks_exclude_expire_and_are_released_only_by_their_holder(redis_url: str) -> None:
    prefix = unique_prefix()
    one, other = RedisStore(redis_url, prefix), RedisStore(redis_url, prefix)  # two processes
    assert isinstance(one, Locking)
    assert not isinstance(MemoryStore(), Locking)

    token = one.try_lock("href\0640", 200)
    assert token is not None
    assert one.client.get(f"{prefix}_next/image-locks/href\0640") == token.encode()
    assert 0 < one.client.pttl(one.lock_redis_key("href\0640")) <= 200
    assert other.try_lock("href\0640", 200) is None
    assert one.try_lock("href\0640", 200) is None  # not reentrant either
    assert other.try_lock("href\0750", 200) is not None  # another key is another lock

    other.unlock("href\0640", "not-the-token")
    assert other.try_lock("href\0640", 200) is None

    # The holder died, or overran: the lock expires (in Redis's time).
    lock = one.lock_redis_key("href\0640")
    wait_for(lambda: one.client.exists(lock) == 0, "the lock expiring")
    taken = other.try_lock("href\0640", 10_000)
    assert taken is not None and taken != token
    one.unlock("href\0640", token)  # the old holder finishing late releases nothing
    assert one.try_lock("href\0640", 10_000) is None

    other.unlock("href\0640", taken)
    assert one.try_lock("href\0640", 10_000) is not None


def test_a_stopped_redis_fails_fast_and_the_optimizer_sees_misses(
    redis_server: RedisServer,
) -> None:
    with redis_server() as url:
        store = RedisStore(url, unique_prefix())
        store.put_variant("k", VARIANT)  # a pooled connection, about to break
    calls: list[Callable[[], object]] = [
        store.ping,
        lambda: store.get_pointer("p"),
        lambda: store.get_variant("k"),
        lambda: store.put_pointer("p", pointer(time.time() + 60)),
        lambda: store.put_variant("k", VARIANT),
        lambda: store.try_lock("k", 1000),
        lambda: store.unlock("k", "token"),
    ]
    for call in calls:
        assert isinstance(raises(call), redis.ConnectionError)

    guarded = GuardedStore(store, call_timeout=HANG_SECONDS)

    async def through_the_guard() -> None:
        started = time.monotonic()
        assert await guarded.get_variant("k") is None
        assert await guarded.get_pointer("p") is None  # awaited on the event loop
        assert await guarded.put_variant("k", VARIANT) is False
        # The store's own failures, long before the guard would have given up on it.
        assert time.monotonic() - started < HANG_SECONDS / 2

    anyio.run(through_the_guard)


def test_a_hung_redis_times_out_within_the_read_timeout() -> None:
    """A server that accepts connections and never answers (the kernel completes the handshake
    for a listening socket that never accepts): each call gives up after about a second."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        for call in (store.ping, lambda: store.get_variant("k")):
            started = time.monotonic()
            assert isinstance(raises(call), redis.TimeoutError)
            assert time.monotonic() - started >= 0.9  # it waited for the read timeout
            assert accepted(silent) == 1  # on one connection: not retried


def test_a_forked_process_gets_a_pool_of_its_own(redis_url: str) -> None:
    store = RedisStore(redis_url, unique_prefix())
    store.put_variant("k", VARIANT)
    parent_client = store.client
    parent_connection = parent_client.client_id()

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            child_client = store.client
            ok = (
                child_client is not parent_client
                and child_client.client_id() != parent_connection
                and store.get_variant("k") == VARIANT
                and store.client is child_client
            )
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)

    deadline = time.monotonic() + HANG_SECONDS
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert store.client is parent_client
    assert parent_client.client_id() == parent_connection  # the parent's connection is intact
    assert store.get_variant("k") == VARIANT


@pytest.fixture
def make_redis_app(public_dir: Path, redis_url: str) -> Iterator[Callable[[str], App]]:
    """An app instance built from settings alone (``store="redis"``), as on a host of its own."""
    clients: list[TestClient] = []

    def make(prefix: str) -> App:
        settings = Settings(
            public_dir=str(public_dir), store="redis", redis_url=redis_url, prefix=prefix
        )
        clock = Clock()
        coordinator = build_coordinator(settings, config=load_images_config(None), clock=clock)
        client = TestClient(create_app(coordinator))
        client.__enter__()
        clients.append(client)
        return App(client, coordinator, coordinator.store.store, clock)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_a_second_host_hits_what_the_first_stored(make_redis_app: Callable[[str], App]) -> None:
    prefix = unique_prefix()
    first, second = make_redis_app(prefix), make_redis_app(prefix)
    assert isinstance(first.store, HeldVariants) and first.store is not second.store
    assert isinstance(first.store.backing, RedisStore)

    miss = first.get("url=%2Ftest.png&w=640&q=75")
    assert miss.status_code == 200
    assert miss.headers["x-nextjs-cache"] == "MISS"
    hit = second.get("url=%2Ftest.png&w=640&q=75")
    assert hit.headers["x-nextjs-cache"] == "HIT"
    assert hit.content == miss.content
    assert hit.headers["etag"] == miss.headers["etag"]
    assert len(second.store.backing.client.keys(f"{prefix}_next/image-variants/*")) == 1


def test_serve_flags_select_the_redis_store(redis_url: str) -> None:
    prefix = unique_prefix()
    args = ("--public-dir", str(REPO / "public"), "--store", "redis")
    args += ("--redis-url", redis_url, "--variant-ttl", "600")
    url = "/_next/image?url=%2Fa.jpg&w=640&q=75"
    with serving(*args, env={"NEXT_IMAGE_PREFIX": prefix}) as client:
        assert client.get(url, headers={"accept": "image/webp"}).headers["x-nextjs-cache"] == "MISS"
        assert client.get(url, headers={"accept": "image/webp"}).headers["x-nextjs-cache"] == "HIT"
    reader = redis.Redis.from_url(redis_url)
    (variant_key,) = reader.keys(f"{prefix}_next/image-variants/*")
    assert 0 < reader.ttl(variant_key) <= 600
    assert len(reader.keys(f"{prefix}_next/image-pointers/*")) == 1


def test_variants_are_held_in_memory_and_pointers_always_read_from_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique_prefix()
    settings = Settings(store="redis", redis_url=redis_url, prefix=prefix)
    store = build_store(settings)
    assert isinstance(store, HeldVariants)
    assert isinstance(build_store(replace(settings, hot_cache_bytes=0)), RedisStore)
    other_host = RedisStore(redis_url, prefix)
    store.put_variant("src/640w", VARIANT)
    store.put_pointer("p", pointer(time.time() + 3600))
    other_host.client.delete(other_host.variant_redis_key("src/640w"))  # expired or evicted
    assert store.get_variant("src/640w") == VARIANT  # the same bytes, whatever Redis holds
    refreshed = pointer(time.time() + 7200)
    other_host.put_pointer("p", refreshed)
    assert store.cached_pointer("p") is None
    assert store.get_pointer("p") == refreshed  # another host's refresh, seen at once

    other_host.put_variant("src/750w", VARIANT)
    held = build_store(settings)
    assert isinstance(held, HeldVariants)
    guarded = GuardedStore(held)
    threads = counting_threads(monkeypatch)
    asked: list[str] = []
    awaited = held.backing.await_variant

    async def counted(key: str) -> Variant | None:
        asked.append(key)
        return await awaited(key)

    monkeypatch.setattr(held.backing, "await_variant", counted)

    async def reads() -> list[object]:
        return [await guarded.get_variant("src/750w") for _ in range(3)]

    assert anyio.run(reads) == [VARIANT] * 3
    assert asked == ["src/750w"]  # read from Redis once, then held
    assert threads == []  # awaited on the event loop, never in a thread


def test_a_hit_reads_its_pointer_on_the_event_loop(
    make_redis_app: Callable[[str], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_redis_app(unique_prefix())
    assert app.get("url=%2Ftest.png&w=640&q=75").headers["x-nextjs-cache"] == "MISS"
    threads = counting_threads(monkeypatch)
    assert app.get("url=%2Ftest.png&w=640&q=75").headers["x-nextjs-cache"] == "HIT"
    assert threads == []  # the pointer awaited, the variant held


def test_an_awaited_read_of_a_hung_redis_times_out_within_the_read_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")

        async def read() -> BaseException:
            with pytest.raises(redis.TimeoutError) as caught:
                await store.await_pointer("p")
            return caught.value

        started = time.monotonic()
        anyio.run(read)
        assert time.monotonic() - started >= 0.9  # it waited for the read timeout
        assert accepted(silent) == 1  # on one connection: not retried
