"""The test servers are real: PostgreSQL, Redis and the S3 API answer on their ports, and the port is
closed once the context that started the server has ended."""

from __future__ import annotations

import socket

import redis

from tests.servers import (
    PostgresServer,
    postgresql_server,
    redis_server,
    running_postgresql,
    running_redis,
    running_s3,
)

__all__ = ["postgresql_server", "redis_server"]  # the fixtures shared by the test run, used by name below


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_postgresql_answers_gives_fresh_databases_and_stops():
    with running_postgresql() as server:
        with server.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        url = server.create_database()
        assert url.startswith(f"postgresql+psycopg://{server.user}@127.0.0.1:{server.port}/")
        with server.connect(url.rsplit("/", 1)[1]) as conn:
            tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            assert tables.fetchone() == (0,)
        port = server.port
        assert port_open(port)
    assert not port_open(port)
    assert not server.directory.exists()  # the cluster's temp folder went with it


def test_redis_answers_and_stops():
    with running_redis() as url:
        port = int(url.rsplit(":", 1)[1])
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    assert not port_open(port)


def test_s3_server_stores_objects_pyarrow_reads_and_stops(monkeypatch):
    import pandas as pd

    with running_s3() as server:
        bucket = server.create_bucket()
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        frame = pd.DataFrame({"a": [1, 2, 3]})
        frame.to_parquet(f"s3://{bucket}/x/a.parquet", index=False)  # pyarrow's S3 filesystem
        assert server.keys(bucket) == ["x/a.parquet"]
        pd.testing.assert_frame_equal(pd.read_parquet(f"s3://{bucket}/x/a.parquet"), frame)
        port = int(server.url.rsplit(":", 1)[1])
        assert port_open(port)
    assert not port_open(port)


def test_shared_fixtures_answer(postgresql_server: PostgresServer, redis_server: str):
    with postgresql_server.connect() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (postgresql_server.user,)
    client = redis.Redis.from_url(redis_server)
    assert client.ping()
    client.close()
