"""The ``http`` tool kind and the egress policy.

Pure tests (no network at all) check the address classification, the resolution step (with an
injected resolver, no DNS) and host allowlist matching; addresses such as 8.8.8.8 are only ever
classified, never connected to. Everything that makes a request talks to servers on loopback
(127.0.0.1 / 127.0.0.2) only, and an autouse fixture makes this test process refuse any
non-loopback connect as a safety net.
"""

from __future__ import annotations

import gzip
import http.server
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
import time
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import errors, sql

from pgagent_core.tools import ToolFailure
from pgagent_core.tools import http as ht
from scripted_llm import ScriptedLLM, text, tool_calls

URL_SCHEMA = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}


# ---------------------------------------------------------------------------- safety net

@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, a connect to anything but loopback raises instead of sending a packet."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(addr: Any) -> None:
        if isinstance(addr, tuple) and not ipaddress.ip_address(addr[0].split("%")[0]).is_loopback:
            raise AssertionError(f"test tried to connect to non-loopback {addr!r}")

    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: (check(addr), real_connect(self, addr))[1])
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, addr: (check(addr), real_connect_ex(self, addr))[1])


# ---------------------------------------------------------------------------- loopback test servers

class LoopServer:
    """An HTTP server on a loopback address that records requests. Routes: ``/big`` (5 MB of
    text), ``/gzip`` (2 MB of zeros, gzip-encoded), ``/slow`` (answers after 5 s unless stopped),
    ``/drip`` (a byte every 0.1 s for 5 s, no Content-Length),
    ``/redirect?to=URL&status=302``, anything else: a JSON echo of the request."""

    def __init__(self, host: str, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.scheme = host, "https" if tls else "http"
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                outer.requests.append({"method": self.command, "path": self.path, "body": body,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
                route, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
                try:
                    if route == "/big":
                        self._send(200, b"x" * 5_000_000, "text/plain")
                    elif route == "/gzip":
                        self._send(200, gzip.compress(b"0" * 2_000_000), "text/plain", {"Content-Encoding": "gzip"})
                    elif route == "/slow":
                        if not outer.stopping.wait(5):
                            self._send(200, b"late", "text/plain")
                    elif route == "/drip":  # no Content-Length: the body ends when the connection does
                        self.send_response(200)
                        self.send_header("Content-Type", "text/plain")
                        self.end_headers()
                        for _ in range(50):
                            if outer.stopping.wait(0.1):
                                break
                            self.wfile.write(b"d")
                            self.wfile.flush()
                    elif route == "/redirect":
                        status = int(query.get("status", ["302"])[0])
                        self._send(status, b"", "text/plain", {"Location": query["to"][0]})
                    else:
                        echo = {"method": self.command, "path": self.path, "host": self.headers.get("Host"),
                                "body": body}
                        self._send(200, json.dumps(echo).encode(), "application/json")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def __enter__(self) -> "LoopServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def srv1() -> Iterator[LoopServer]:
    with LoopServer("127.0.0.1") as s:
        yield s


@pytest.fixture
def srv2() -> Iterator[LoopServer]:
    with LoopServer("127.0.0.2") as s:
        yield s


def fake_resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> ht.Resolver:
    """A getaddrinfo stand-in answering from ``table`` (no DNS); records the names asked."""
    def resolve(host: str, port: int, family: int = 0, type: int = 0, *a: Any) -> list:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a_ else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a_, port) if ":" not in a_ else (a_, port, 0, 0)) for a_ in table[host]]
    return resolve


# ---------------------------------------------------------------------------- pure: addresses

REFUSED = {
    "127.0.0.1": "loopback", "127.8.9.10": "loopback", "::1": "loopback", "10.0.0.1": "private",
    "172.16.0.1": "private", "172.31.255.254": "private", "192.168.1.1": "private",
    "169.254.169.254": "cloud metadata", "169.254.1.1": "link-local", "fe80::1": "link-local",
    "fc00::1": "private", "fd00:ec2::254": "cloud metadata", "100.100.100.200": "cloud metadata",
    "224.0.0.1": "multicast", "ff02::1": "multicast", "0.0.0.0": "unspecified", "::": "unspecified",
    "::ffff:127.0.0.1": "loopback", "::ffff:10.0.0.1": "private", "100.64.0.1": "shared address space",
    "255.255.255.255": "broadcast", "::ffff:169.254.169.254": "cloud metadata", "64:ff9b::7f00:1": "loopback",
    "2002:7f00:1::": "loopback", "fe80::1%eth0": "link-local",
}
# refused too; the reason's wording depends on the Python version's ipaddress tables
ALSO_REFUSED = ["::7f00:1", "240.0.0.1", "2001:db8::1", "192.0.2.1", "198.18.0.1", "::ffff:0.0.0.0"]
# classified only: nothing in this file ever connects to these
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize("ip,reason", sorted(REFUSED.items()))
def test_address_refused(ip, reason):
    assert not ht.address_allowed(ip)
    assert ht.address_problem(ip) == reason


@pytest.mark.parametrize("ip", ALSO_REFUSED)
def test_address_refused_other(ip):
    assert not ht.address_allowed(ip) and ht.address_problem(ip)


@pytest.mark.parametrize("ip", ALLOWED)
def test_address_allowed(ip):
    assert ht.address_allowed(ip) and ht.address_problem(ip) is None


def test_exceptions_cover_only_their_network():
    nets = ["127.0.0.2/32", "10.1.0.0/16"]
    assert ht.address_allowed("127.0.0.2", nets) and ht.address_allowed("::ffff:127.0.0.2", nets)
    assert ht.address_allowed("10.1.200.3", nets)
    for ip in ("127.0.0.1", "127.0.0.3", "10.2.0.1", "192.168.1.1", "::1"):
        assert not ht.address_allowed(ip, nets), ip


@pytest.mark.parametrize("ip,net", [("169.254.169.254", "169.254.0.0/16"), ("169.254.169.254", "0.0.0.0/0"),
                                    ("fd00:ec2::254", "fd00::/8"), ("100.100.100.200", "100.64.0.0/10"),
                                    ("::ffff:169.254.169.254", "::/0")])
def test_metadata_refused_even_with_an_exception(ip, net):
    assert ht.address_problem(ip, [net]) == "cloud metadata"


def test_resolution_refuses_if_any_address_is_bad():
    calls: list[str] = []
    resolver = fake_resolver({"mixed.example.com": ["8.8.8.8", "127.0.0.1"],
                              "good.example.com": ["8.8.8.8", "2606:4700:4700::1111"],
                              "meta.example.com": ["169.254.169.254"]}, calls)
    with pytest.raises(ht.Refused, match=r"refused: 127\.0\.0\.1 \(loopback\) for host mixed\.example\.com"):
        ht.resolve("mixed.example.com", 443, (), resolver)
    with pytest.raises(ht.Refused, match="cloud metadata"):
        ht.resolve("meta.example.com", 80, ["169.254.0.0/16"], resolver)
    assert ht.resolve("good.example.com", 443, (), resolver) == ["8.8.8.8", "2606:4700:4700::1111"]
    with pytest.raises(ToolFailure, match="cannot resolve host nowhere.example.com"):
        ht.resolve("nowhere.example.com", 443, (), resolver)
    assert ht.resolve("127.0.0.2", 80, ["127.0.0.2/32"], resolver) == ["127.0.0.2"]  # literal: no lookup
    assert calls == ["mixed.example.com", "meta.example.com", "good.example.com", "nowhere.example.com"]


def test_check_url_checks_allowlist_before_dns():
    calls: list[str] = []
    resolver = fake_resolver({"api.example.com": ["8.8.8.8"], "evil-example.com": ["8.8.4.4"]}, calls)
    t = ht.check_url("https://API.Example.com./v1/x?q=1#frag", ["*.example.com"], (), resolver)
    assert (t.scheme, t.host, t.port, t.path) == ("https", "api.example.com", 443, "/v1/x?q=1")
    assert t.addresses == ["8.8.8.8"]
    assert t.host_header == "api.example.com"
    with pytest.raises(ht.Refused, match="evil-example.com is not in the tenant's egress allowlist"):
        ht.check_url("https://evil-example.com/", ["*.example.com"], (), resolver)
    assert calls == ["api.example.com"]  # the refused host was never looked up
    for bad, msg in [("ftp://api.example.com/", "scheme"), ("file:///etc/passwd", "scheme"),
                     ("http://user:pw@api.example.com/", "credentials"), ("http://:80/", "no host"),
                     ("http://api.example.com:99999/", "invalid URL"), ("api.example.com/x", "scheme")]:
        with pytest.raises(ht.Refused, match=msg):
            ht.check_url(bad, ["*.example.com", "api.example.com"], (), resolver)
    assert calls == ["api.example.com"]


@pytest.mark.parametrize("host,patterns,ok", [
    ("api.example.com", ["api.example.com"], True),
    ("api.example.com", ["*.example.com"], True),
    ("a.b.example.com", ["*.example.com"], True),
    ("example.com", ["*.example.com"], False),
    ("evil-example.com", ["*.example.com"], False),
    ("example.com.evil.net", ["*.example.com", "example.com"], False),
    ("notexample.com", ["example.com"], False),
    ("api.example.com", ["example.com"], False),
    ("127.0.0.1", ["*.0.0.1"], False),
    ("::1", ["::1"], True),
])
def test_host_allowlist_matching(host, patterns, ok):
    assert ht.host_allowed(host, patterns) is ok


def test_normalize_host():
    assert ht.normalize_host("EXAMPLE.com.") == "example.com"
    assert ht.normalize_host("0:0::1") == "::1"
    assert ht.normalize_host("bücher.example") == "xn--bcher-kva.example"


def test_build_request():
    cfg = {"url": "https://api.example.com/v1/{city}", "method": "GET"}
    assert ht.build_request(cfg, {"city": "São Paulo/x", "units": "metric"})[:3] == (
        "GET", "https://api.example.com/v1/S%C3%A3o%20Paulo%2Fx?units=metric", None)
    m, u, body, hdrs = ht.build_request({"url": "https://h/{id}", "method": "post"}, {"id": 7, "a": [1], "b": True})
    assert (m, u, json.loads(body), hdrs) == ("POST", "https://h/7", {"a": [1], "b": True},
                                              {"Content-Type": "application/json"})
    m, u, body, _ = ht.build_request({"method": "PUT", "body_arg": "doc"}, {"url": "https://h/x", "doc": "hi", "z": 1})
    assert (m, u, body) == ("PUT", "https://h/x", b"hi")
    with pytest.raises(ToolFailure, match="missing argument"):
        ht.build_request(cfg, {})
    with pytest.raises(ToolFailure, match="argument 'url'"):
        ht.build_request({}, {})


@pytest.mark.parametrize("config,ok", [
    ({}, True), ({"url": "https://api.example.com/{x}", "method": "post", "headers": {"Accept": "a/b"},
                  "body_arg": "x", "max_bytes": 10, "max_redirects": 0}, True),
    ({"url": "ftp://x/"}, False), ({"url": "https://u@x/"}, False), ({"method": "TRACE"}, False),
    ({"headers": {"Host": "x"}}, False), ({"headers": {"X": "a\r\nB: c"}}, False), ({"headers": ["x"]}, False),
    ({"max_bytes": 0}, False), ({"max_bytes": True}, False), ({"max_redirects": 11}, False),
    ({"body_arg": "x"}, False), ({"timeout": 5}, False),
])
def test_check_config(config, ok):
    if ok:
        ht.check_config(config)
    else:
        with pytest.raises(ValueError):
            ht.check_config(config)


# ---------------------------------------------------------------------------- in process, loopback only

def test_connects_to_the_checked_address_only(srv1, srv2):
    """DNS pinning: the name is resolved once, the connection goes to that checked address with
    the name as Host header; a resolver that would answer differently the second time (DNS
    rebinding) is never asked again."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int, *a: Any) -> list:
        calls.append(host)
        return fake_resolver({host: next(answers)})(host, port)

    r = ht.fetch(f"http://api.internal.test:{srv2.port}/hello", patterns=["*.internal.test"],
                 exceptions=["127.0.0.2/32"], resolver=rebinding)
    assert r["status"] == 200 and r["body"]["host"] == f"api.internal.test:{srv2.port}"
    assert calls == ["api.internal.test"] and len(srv2.requests) == 1 and srv1.requests == []


def test_static_headers_stay_with_their_origin(srv2):
    other = LoopServer("127.0.0.2")
    with other:
        to = other.url("/landing")
        r = ht.fetch(srv2.url(f"/redirect?to={to}"), headers={"Authorization": "Bearer s3cret"},
                     patterns=["127.0.0.2"], exceptions=["127.0.0.2/32"])
        assert r["status"] == 200 and r["redirects"] == [to]
        assert srv2.requests[0]["headers"]["authorization"] == "Bearer s3cret"
        assert "authorization" not in other.requests[0]["headers"]


def test_gzip_body_is_capped_after_decoding(srv2):
    r = ht.fetch(srv2.url("/gzip"), patterns=["127.0.0.2"], exceptions=["127.0.0.2/32"], max_bytes=5000)
    assert r["truncated"] is True and r["body"] == "0" * 5000


@pytest.fixture
def tls_files(tmp_path) -> dict[str, str]:
    """A throwaway CA and a certificate it signed for api.internal.test (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:api.internal.test\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=pgagent test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj",
        "/CN=api.internal.test")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "leaf.pem", "-days", "1", "-extfile", "san.ext")
    return {k: str(tmp_path / f) for k, f in (("ca", "ca.pem"), ("cert", "leaf.pem"), ("key", "leaf.key"))}


def test_https_verifies_the_host_name_on_the_pinned_address(tls_files, monkeypatch):
    """HTTPS goes to the checked address, with SNI and certificate verification for the URL's
    host name (a certificate for another name, or from an untrusted CA, is refused)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_files["cert"], tls_files["key"])
    resolver = fake_resolver({"api.internal.test": ["127.0.0.2"], "other.internal.test": ["127.0.0.2"]})
    kw = {"patterns": ["*.internal.test"], "exceptions": ["127.0.0.2/32"], "resolver": resolver, "timeout_ms": 3000}
    with LoopServer("127.0.0.2", tls=server_ctx) as srv:
        with pytest.raises(ToolFailure, match="TLS error: .*CERTIFICATE_VERIFY_FAILED"):
            ht.fetch(f"https://api.internal.test:{srv.port}/", **kw)  # system CAs do not know the test CA
        real = ssl.create_default_context
        monkeypatch.setattr(ht.ssl, "create_default_context", lambda: real(cafile=tls_files["ca"]))
        r = ht.fetch(f"https://api.internal.test:{srv.port}/hello", **kw)
        assert r["status"] == 200 and r["body"]["host"] == f"api.internal.test:{srv.port}"
        with pytest.raises(ToolFailure, match="TLS error: .*(mismatch|doesn't match)"):
            ht.fetch(f"https://other.internal.test:{srv.port}/", **kw)
        assert len(srv.requests) == 1


def test_total_deadline_covers_a_dripping_body(srv2):
    """Every read returns quickly, but the whole call is cut at timeout_ms, and the part read so
    far is not passed off as the complete body."""
    t0 = time.monotonic()
    with pytest.raises(ToolFailure, match=r"^GET http://127\.0\.0\.2:\d+/drip: timed out after 400 ms$"):
        ht.fetch(srv2.url("/drip"), patterns=["127.0.0.2"], exceptions=["127.0.0.2/32"], timeout_ms=400)
    assert time.monotonic() - t0 < 1.5


# ---------------------------------------------------------------------------- in the database

def setup_http(conn: psycopg.Connection, llm: ScriptedLLM, config: dict[str, Any] | None = None, *,
               timeout_ms: int = 3000, schema: dict[str, Any] | None = None) -> int:
    """A model at the scripted server, one http tool ``fetch`` and an agent using it; returns a
    new conversation id (for the session's current tenant)."""
    conn.execute("SELECT pgagent.register_model('scripted', base_url => %s, max_retries => 0)", [llm.base_url])
    conn.execute("SELECT pgagent.register_tool('fetch', 'Fetch a URL', %s, kind => 'http', config => %s, "
                 "timeout_ms => %s)", [json.dumps(schema or URL_SCHEMA), json.dumps(config or {}), timeout_ms])
    conn.execute("""SELECT pgagent.create_agent('web', model => 'scripted', tools => '{fetch}',
                    config => '{"retry_backoff_ms": 1}')""")
    return conn.execute("SELECT pgagent.start_conversation('web')").fetchone()[0]


def call_tool(conn: psycopg.Connection, llm: ScriptedLLM, cid: int, args: dict[str, Any]) -> dict[str, Any]:
    """One turn in which the model calls ``fetch`` with ``args``; returns the tool_result payload."""
    llm.script(tool_calls([("fetch", args)]), text("done"))
    r = conn.execute("SELECT pgagent.send_message(%s, 'fetch it')", [cid]).fetchone()[0]
    assert r["status"] == "completed", r
    return conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                        [r["turn_id"]]).fetchone()[0]


def allow(conn: psycopg.Connection, *hosts: str) -> None:
    for h in hosts:
        conn.execute("SELECT pgagent.allow_egress(%s)", [h])


def except_net(conn: psycopg.Connection, network: str = "127.0.0.2/32") -> None:
    conn.execute("INSERT INTO pgagent.egress_exception (tenant_id, network, note) "
                 "VALUES (pgagent.current_tenant(), %s, 'loopback test server')", [network])


def test_loopback_literal_refused(conn, llm, srv1):
    cid = setup_http(conn, llm)
    allow(conn, "127.0.0.1")
    p = call_tool(conn, llm, cid, {"url": srv1.url("/")})
    assert p["is_error"] and p["error"] == f"GET {srv1.url('/')}: refused: 127.0.0.1 (loopback) for host 127.0.0.1"
    assert (p["method"], p["url"], p["status"]) == ("GET", srv1.url("/"), None)  # recorded in the step
    assert srv1.requests == []


def test_localhost_refused_after_resolution(conn, llm, srv1):
    cid = setup_http(conn, llm)
    allow(conn, "localhost")
    p = call_tool(conn, llm, cid, {"url": f"http://localhost:{srv1.port}/"})
    assert p["is_error"] and "refused: 127.0.0.1 (loopback) for host localhost" in p["error"]
    assert srv1.requests == []


def test_ipv6_loopback_refused(conn, llm):
    cid = setup_http(conn, llm)
    allow(conn, "[::1]")
    p = call_tool(conn, llm, cid, {"url": "http://[::1]:9/x"})
    assert p["is_error"] and "refused: ::1 (loopback) for host ::1" in p["error"]


def test_host_not_allowlisted_refused(conn, llm, srv2):
    cid = setup_http(conn, llm)
    except_net(conn)
    allow(conn, "*.example.com")
    p = call_tool(conn, llm, cid, {"url": srv2.url("/")})
    assert p["is_error"] and "host 127.0.0.2 is not in the tenant's egress allowlist" in p["error"]
    p = call_tool(conn, llm, cid, {"url": "http://nowhere.invalid/"})
    assert p["is_error"] and "host nowhere.invalid is not in the tenant's egress allowlist" in p["error"]
    assert srv2.requests == []


def test_get_through_an_exception(conn, llm, srv2):
    cid = setup_http(conn, llm)
    except_net(conn)
    allow(conn, "127.0.0.2")
    p = call_tool(conn, llm, cid, {"url": srv2.url("/hello?x=1")})
    assert p["is_error"] is False
    assert p["result"] == {"method": "GET", "url": srv2.url("/hello?x=1"), "status": 200,
                           "content_type": "application/json", "truncated": False, "redirects": [],
                           "body": {"method": "GET", "path": "/hello?x=1", "host": f"127.0.0.2:{srv2.port}",
                                    "body": ""}}
    assert srv2.requests[0]["headers"]["user-agent"].startswith("pgagent")
    # the model was told the result
    assert json.loads(llm.requests[1]["body"]["messages"][-1]["content"])["status"] == 200


def test_configured_url_and_post_body(conn, llm, srv2):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city"]}
    cid = setup_http(conn, llm, {"url": srv2.url("/v1/{city}"), "method": "POST",
                                 "headers": {"X-Api": "k1"}}, schema=schema)
    except_net(conn)
    allow(conn, "127.0.0.2")
    p = call_tool(conn, llm, cid, {"city": "São Paulo", "days": 3})
    assert p["result"]["status"] == 200 and p["result"]["method"] == "POST"
    req = srv2.requests[0]
    assert req["path"] == "/v1/S%C3%A3o%20Paulo" and json.loads(req["body"]) == {"days": 3}
    assert req["headers"]["x-api"] == "k1" and req["headers"]["content-type"] == "application/json"


def test_redirect_to_loopback_refused(conn, llm, srv1, srv2):
    cid = setup_http(conn, llm)
    except_net(conn)
    allow(conn, "127.0.0.2", "127.0.0.1")
    target = srv1.url("/secret")
    p = call_tool(conn, llm, cid, {"url": srv2.url(f"/redirect?to={target}")})
    assert p["is_error"] and f"GET {target} (after 1 redirect(s)): refused: 127.0.0.1 (loopback)" in p["error"]
    assert p["url"] == target and p["redirects"] == [target] and p["status"] is None
    assert len(srv2.requests) == 1 and srv1.requests == []


def test_redirects_followed_and_capped(conn, llm, srv2):
    cid = setup_http(conn, llm, {"max_redirects": 1})
    except_net(conn)
    allow(conn, "127.0.0.2")
    p = call_tool(conn, llm, cid, {"url": srv2.url("/redirect?to=/landing&status=301")})
    assert p["result"]["status"] == 200 and p["result"]["redirects"] == [srv2.url("/landing")]
    assert p["result"]["url"] == srv2.url("/landing")
    twice = srv2.url("/redirect?to=/redirect%3Fto%3D/landing")
    p = call_tool(conn, llm, cid, {"url": twice})
    assert p["is_error"] and "too many redirects (max_redirects 1)" in p["error"]
    assert p["method"] == "GET" and p["status"] in (301, 302, 303, 307, 308)


def test_big_body_truncated(conn, llm, srv2):
    cid = setup_http(conn, llm, {"max_bytes": 1000})
    except_net(conn)
    allow(conn, "127.0.0.2")
    p = call_tool(conn, llm, cid, {"url": srv2.url("/big")})
    assert p["result"]["truncated"] is True and p["result"]["body"] == "x" * 1000 and p["result"]["status"] == 200


def test_slow_server_times_out(conn, llm, srv2):
    cid = setup_http(conn, llm, timeout_ms=500)
    except_net(conn)
    allow(conn, "127.0.0.2")
    t0 = time.monotonic()
    p = call_tool(conn, llm, cid, {"url": srv2.url("/slow")})
    assert p["is_error"] and p["error"] == f"GET {srv2.url('/slow')}: timed out after 500 ms"
    assert time.monotonic() - t0 < 4


def test_bad_http_config_is_refused(conn):
    with pytest.raises(errors.InvalidParameterValue, match="config.method"):
        conn.execute("SELECT pgagent.register_tool('f', 'F', kind => 'http', config => '{\"method\": \"TRACE\"}')")


def test_allow_and_revoke_egress(conn):
    assert conn.execute("SELECT pgagent.allow_egress(' API.Example.COM. ')").fetchone()[0] is True
    assert conn.execute("SELECT pgagent.allow_egress('api.example.com')").fetchone()[0] is False
    assert conn.execute("SELECT pgagent.allow_egress('[0:0::1]')").fetchone()[0] is True
    assert {r[0] for r in conn.execute("SELECT host FROM pgagent.egress_allow")} == {"api.example.com", "::1"}
    for bad in ("https://api.example.com", "api.example.com:443", "api.example.com/x", "u@h", "1.2.3.4:80", "", "*"):
        with pytest.raises((errors.InvalidParameterValue, errors.CheckViolation)):
            conn.execute("SELECT pgagent.allow_egress(%s)", [bad])
    assert conn.execute("SELECT pgagent.revoke_egress('api.example.com')").fetchone()[0] is True
    assert conn.execute("SELECT pgagent.revoke_egress('api.example.com')").fetchone()[0] is False
    actions = [r[0] for r in conn.execute("SELECT action FROM pgagent.audit_event WHERE object_type = 'egress_allow' "
                                          "ORDER BY chain_seq")]
    assert actions == ["egress_allowed"] * 3 + ["egress_revoked"] * 2
    assert conn.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True


# ---------------------------------------------------------------------------- roles and tenants

@pytest.fixture
def tenant_roles(cluster, dbname, conn) -> Iterator[dict[str, str]]:
    """Tenants acme and globex, each with a group role and login roles <tenant>_user / _admin."""
    made: list[str] = []
    names = {}
    try:
        for t in ("acme", "globex"):
            group = f"{dbname}_{t}"
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            made.append(group)
            for g in ("user", "admin"):
                r = names[f"{t}_{g}"] = f"{group}_{g}"
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}, {}").format(
                    sql.Identifier(r), sql.Identifier(f"pgagent_{g}"), sql.Identifier(group)))
                made.append(r)
            conn.execute("SELECT pgagent.add_tenant(%s, %s)", [t, group])
        yield names
    finally:
        for r in reversed(made):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


def test_egress_privileges(cluster, dbname, conn, tenant_roles):
    def connect(role: str) -> psycopg.Connection:
        return psycopg.connect(cluster.dsn(dbname, user=tenant_roles[role]), autocommit=True)

    with connect("acme_admin") as a:
        assert a.execute("SELECT pgagent.allow_egress('api.acme.example')").fetchone()[0] is True
        with pytest.raises(errors.InsufficientPrivilege):
            a.execute("INSERT INTO pgagent.egress_exception (tenant_id, network) "
                      "VALUES (pgagent.current_tenant(), '127.0.0.0/8')")
        with pytest.raises(errors.InsufficientPrivilege):
            a.execute("UPDATE pgagent.egress_allow SET host = 'evil.example'")
        globex = conn.execute("SELECT tenant_id FROM pgagent.tenant WHERE name = 'globex'").fetchone()[0]
        with pytest.raises(errors.InsufficientPrivilege):  # row level security: not its tenant
            a.execute("INSERT INTO pgagent.egress_allow (tenant_id, host) VALUES (%s, 'x.example')", [globex])
    with connect("acme_user") as u:
        with pytest.raises(errors.InsufficientPrivilege):
            u.execute("SELECT pgagent.allow_egress('evil.example')")
        with pytest.raises(errors.InsufficientPrivilege):
            u.execute("INSERT INTO pgagent.egress_allow (host) VALUES ('evil.example')")
        with pytest.raises(errors.InsufficientPrivilege):
            u.execute("DELETE FROM pgagent.egress_allow")
        assert [r[0] for r in u.execute("SELECT host FROM pgagent.egress_allow")] == ["api.acme.example"]
    conn.execute("SET pgagent.tenant = 'acme'")
    except_net(conn, "10.9.0.0/16")
    with connect("globex_admin") as g:
        assert g.execute("SELECT count(*) FROM pgagent.egress_allow").fetchone()[0] == 0
        assert g.execute("SELECT count(*) FROM pgagent.egress_exception").fetchone()[0] == 0
        assert g.execute("SELECT pgagent.revoke_egress('api.acme.example')").fetchone()[0] is False
    with connect("acme_user") as u:
        assert [r[0] for r in u.execute("SELECT network::text FROM pgagent.egress_exception")] == ["10.9.0.0/16"]
    assert conn.execute("SELECT count(*) FROM pgagent.egress_allow").fetchone()[0] == 1


def test_allowlist_is_per_tenant(conn, llm, srv2, tenant_roles):
    conn.execute("SET pgagent.tenant = 'acme'")
    except_net(conn)
    allow(conn, "127.0.0.2")
    acme = setup_http(conn, llm)
    assert call_tool(conn, llm, acme, {"url": srv2.url("/")})["result"]["status"] == 200
    conn.execute("SET pgagent.tenant = 'globex'")
    globex = setup_http(conn, llm)
    p = call_tool(conn, llm, globex, {"url": srv2.url("/")})
    assert p["is_error"] and "not in the tenant's egress allowlist" in p["error"]
    allow(conn, "127.0.0.2")  # allowlisted, but globex has no exception for the loopback address
    p = call_tool(conn, llm, globex, {"url": srv2.url("/")})
    assert p["is_error"] and "refused: 127.0.0.2 (loopback)" in p["error"]
    assert len(srv2.requests) == 1
