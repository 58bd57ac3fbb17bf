"""``http`` tools: one HTTP(S) request to a host on the tenant's egress allowlist.

config:
  ``url``           ``"https://api.example.com/v1/{city}"``: ``{name}`` placeholders are filled with
                    the URL-quoted arguments of that name. Without ``url`` the model supplies the
                    whole URL in an argument named ``url``.
  ``method``        GET (default), HEAD, POST, PUT, PATCH or DELETE.
  ``headers``       static request headers, e.g. ``{"Accept": "application/json"}``.
  ``body_arg``      (POST/PUT/PATCH) the argument sent as the body (an object or array as JSON,
                    anything else as text); without it the remaining arguments (those not used in
                    the URL) are sent as a JSON object. For GET/HEAD/DELETE the remaining
                    arguments become query parameters.
  ``max_bytes``     cap on the response body in bytes (default 1_000_000); more is cut off and
                    the result says ``"truncated": true``.
  ``max_redirects`` redirects followed (default 3); one more is a failure.
The tool's ``timeout_ms`` bounds the whole call: connecting, TLS, headers, every redirect and
reading the body (a watchdog shuts the socket at the deadline).

Egress checks, in this order, for the URL and again for every redirect target:
  1. the URL is http or https, has a host and no user:password@;
  2. the host is on the tenant's allowlist (pgagent.egress_allow: an exact host or ``*.suffix``);
     nothing is looked up in DNS for a host that is not;
  3. the host is resolved (getaddrinfo) and EVERY address must pass :func:`address_problem`:
     loopback, private, link-local, shared (CGNAT), multicast, broadcast, reserved, unspecified
     and other non-global addresses are refused unless they lie in one of the tenant's
     pgagent.egress_exception networks (written only by a superuser); cloud metadata addresses
     are refused always;
  4. the connection goes to the checked address itself (no second DNS lookup, so a rebinding DNS
     server cannot swap the address), with the host name sent as Host header and TLS SNI and the
     certificate verified against the host name. No proxy is used.
Result: ``{"method", "url", "status", "content_type", "body", "truncated", "redirects"}``: body is
text, or the parsed value for a JSON content type. Refusals and transport errors raise
ToolFailure with the method, the URL and the reason, so they are recorded in the tool_result step.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

from . import ToolContext, ToolFailure

DEFAULT_MAX_BYTES = 1_000_000
MAX_MAX_BYTES = 50_000_000
DEFAULT_MAX_REDIRECTS = 3
MAX_MAX_REDIRECTS = 10
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
CONFIG_KEYS = {"url", "method", "headers", "body_arg", "max_bytes", "max_redirects"}
FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
USER_AGENT = "pgagent-http-tool/0.1"
READ_CHUNK = 65536

#: Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba): refused even
#: inside an exception network.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
SHARED = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: socket.getaddrinfo's signature: (host, port, family=0, type=0, ...) -> [(family, type, proto,
#: canonname, sockaddr)]; tests inject a fake one.
Resolver = Callable[..., list]

EGRESS_SQL = """
SELECT (SELECT coalesce(pg_catalog.jsonb_agg(a.host), '[]') FROM pgagent.egress_allow a
         WHERE a.tenant_id = $1::uuid) AS hosts,
       (SELECT coalesce(pg_catalog.jsonb_agg(e.network::text), '[]') FROM pgagent.egress_exception e
         WHERE e.tenant_id = $1::uuid) AS networks"""


class Refused(ToolFailure):
    """The egress policy refused a URL (host not allowed, or a forbidden address)."""


# ---------------------------------------------------------------------------- addresses

def parse_ip(ip: str | IPAddress) -> IPAddress:
    """An address object from text (an IPv6 zone such as ``%eth0`` is dropped). Raises ValueError."""
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ip
    return ipaddress.ip_address(str(ip).split("%", 1)[0])


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, 6to4 ``2002:aabb:ccdd::``), else None."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _category(ip: IPAddress) -> str | None:
    """Why a (non-embedding) address is not public, or None for a global unicast address."""
    checks = [("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("multicast", ip.is_multicast),
              ("link-local", ip.is_link_local), ("shared address space", ip in SHARED),
              ("broadcast", ip == ipaddress.IPv4Address("255.255.255.255")), ("private", ip.is_private),
              ("reserved", ip.is_reserved), ("not globally routable", not ip.is_global)]
    return next((name for name, hit in checks if hit), None)


def address_problem(ip: str | IPAddress, exceptions: Iterable[str | IPNetwork] = ()) -> str | None:
    """Why ``ip`` may not be contacted (e.g. ``"loopback"``, ``"cloud metadata"``), or None.

    Allowed: a global unicast address, or any address inside one of ``exceptions`` (networks as
    text or objects) except a cloud metadata address, which is refused always. An IPv6 address
    that embeds an IPv4 address (mapped, NAT64, 6to4) is judged by the IPv4 address. Raises
    ValueError for text that is not an address.
    """
    addr = parse_ip(ip)
    inner = embedded_ipv4(addr)
    if addr in METADATA or inner in METADATA:
        return "cloud metadata"
    target = inner or addr
    nets = [n if not isinstance(n, str) else ipaddress.ip_network(n, strict=False) for n in exceptions]
    if any(a in n for n in nets for a in (target, addr)):
        return None
    return _category(target)


def address_allowed(ip: str | IPAddress, exceptions: Iterable[str | IPNetwork] = ()) -> bool:
    """True iff :func:`address_problem` finds nothing wrong with ``ip``."""
    return address_problem(ip, exceptions) is None


# ---------------------------------------------------------------------------- hosts

def normalize_host(host: str) -> str:
    """Lower-case ASCII form of a URL host (IDNA for non-ASCII names, no trailing dot, IP
    literals in canonical form). Raises ValueError for a host that cannot be encoded."""
    h = host.strip().rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if not h.isascii():
        h = h.encode("idna").decode("ascii")
    if not h or any(c in h for c in "/\\@:% \t\r\n"):
        raise ValueError(f"invalid host {host!r}")
    return h


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether normalized ``host`` matches an allowlist entry: an exact host, or ``*.suffix``
    matching names that end in ``.suffix`` (not ``suffix`` itself, not ``evil-suffix``). IP
    literals match exact entries only."""
    for p in patterns:
        p = p.lower()
        if host == p:
            return True
        if p.startswith("*.") and not _is_ip(host) and host.endswith(p[1:]) and len(host) > len(p) - 1:
            return True
    return False


# ---------------------------------------------------------------------------- checking a URL

@dataclass
class Target:
    """A URL that passed the egress checks: where to connect (``addresses``, all checked) and
    what to send (``host_header``, ``path`` with the query)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    addresses: list[str] = field(default_factory=list)

    @property
    def host_header(self) -> str:
        """The Host header value (with the port when it is not the scheme's default)."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): where static headers may be sent."""
        return (self.scheme, self.host, self.port)


def parse_url(url: str) -> Target:
    """Split and validate a URL (http/https, a host, no userinfo, a valid port). Raises Refused."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise Refused(f"invalid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"refused: scheme {parts.scheme or '(none)'!r} (only http and https)")
    if "@" in parts.netloc:
        raise Refused("refused: credentials (user@ or user:password@) in the URL")
    if not parts.hostname:
        raise Refused("invalid URL: no host")
    try:
        host = normalize_host(parts.hostname)
    except (ValueError, UnicodeError) as e:
        raise Refused(f"invalid URL host: {e}") from None
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return Target(url=urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, "")), scheme=scheme,
                  host=host, port=port or (443 if scheme == "https" else 80), path=path)


def resolve(host: str, port: int, exceptions: Iterable[str | IPNetwork] = (),
            resolver: Resolver = socket.getaddrinfo) -> list[str]:
    """Every address ``host`` resolves to, each checked with :func:`address_problem` (an IP
    literal is not looked up). Raises Refused naming the first bad address and the reason, or
    ToolFailure when the name does not resolve."""
    if _is_ip(host):
        addrs = [host]
    else:
        try:
            infos = resolver(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise ToolFailure(f"cannot resolve host {host}: {e}") from None
        addrs = list(dict.fromkeys(str(parse_ip(info[4][0])) for info in infos))
    if not addrs:
        raise ToolFailure(f"host {host} has no address")
    nets = [ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in exceptions]
    for a in addrs:
        problem = address_problem(a, nets)
        if problem:
            raise Refused(f"refused: {a} ({problem}) for host {host}")
    return addrs


def check_url(url: str, patterns: Iterable[str], exceptions: Iterable[str | IPNetwork] = (),
              resolver: Resolver = socket.getaddrinfo) -> Target:
    """The whole egress check for one URL: parse, allowlist (before any DNS lookup), resolve and
    check every address. Returns the Target to connect to. Raises Refused / ToolFailure."""
    target = parse_url(url)
    if not host_allowed(target.host, patterns):
        raise Refused(f"refused: host {target.host} is not in the tenant's egress allowlist "
                      "(an admin adds it with pgagent.allow_egress)")
    target.addresses = resolve(target.host, target.port, exceptions, resolver)
    return target


# ---------------------------------------------------------------------------- one request

class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP address, with SNI and certificate verification for ``sni_host``."""

    def __init__(self, ip: str, port: int, sni_host: str, timeout: float) -> None:
        super().__init__(ip, port, timeout=timeout, context=ssl.create_default_context())
        self.sni_host = sni_host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP to the checked address
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.sni_host)


class _Watchdog:
    """Shuts down, at ``deadline`` (time.monotonic() seconds), the sockets of the connections in
    ``conns`` (both the one a connection is handshaking on and the one it connected with, which
    the response keeps reading after http.client drops it), so that nothing (the TLS handshake,
    headers, a slowly dripping body) outlives it; ``fired`` tells whether it did."""

    def __init__(self, conns: list[http.client.HTTPConnection], deadline: float) -> None:
        self.conns, self.socks, self.fired = conns, [], False
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        for sock in [*self.socks, *(c.sock for c in self.conns)]:
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "_Watchdog":
        self.timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()


def _connect(target: Target, deadline: float, dog: _Watchdog) -> http.client.HTTPConnection:
    """An open connection to the first of the target's checked addresses that accepts one (each
    attempt and its socket are handed to the watchdog). Raises OSError (the last address's
    error) or socket.timeout."""
    last: OSError | None = None
    for ip in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline reached while connecting")
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(ip, target.port, target.host, remaining)
        else:
            conn = http.client.HTTPConnection(ip, target.port, timeout=remaining)
        dog.conns.append(conn)
        try:
            conn.connect()
            dog.socks.append(conn.sock)
            return conn
        except (socket.timeout, ssl.SSLError):
            raise
        except OSError as e:
            last = e
    raise last or OSError("no address to connect to")


def _read_body(resp: http.client.HTTPResponse, max_bytes: int) -> tuple[bytes, bool]:
    """Up to ``max_bytes`` of the (decoded, for gzip/deflate) body and whether more was cut off.
    Raises ToolFailure for an unsupported Content-Encoding."""
    encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise ToolFailure(f"unsupported Content-Encoding {encoding!r}")
    inflate = None if encoding == "identity" else zlib.decompressobj(47 if "gzip" in encoding else 15)
    out = bytearray()
    while len(out) <= max_bytes:
        chunk = resp.read(READ_CHUNK)
        if not chunk:
            if inflate is not None:
                out += inflate.flush()
            return bytes(out[:max_bytes]), len(out) > max_bytes
        if inflate is not None:
            # bounded: a small compressed body cannot expand beyond the cap (decompression bomb)
            chunk = inflate.decompress(chunk, max_bytes + 1 - len(out))
            if inflate.unconsumed_tail:
                out += chunk
                break
        out += chunk
    return bytes(out[:max_bytes]), True


def _decode(raw: bytes, content_type: str | None, truncated: bool) -> Any:
    """Body text (charset from the content type, else UTF-8; undecodable bytes replaced), or the
    parsed value when the content type is JSON and the whole body was read."""
    ctype = (content_type or "").lower()
    m = re.search(r"charset=\"?([A-Za-z0-9._-]+)", ctype)
    try:
        text = raw.decode(m.group(1) if m else "utf-8", errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    media = ctype.split(";", 1)[0].strip()
    if not truncated and (media in ("application/json", "text/json") or media.endswith("+json")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


@dataclass
class Response:
    """One response: status, headers needed for redirects, and the body (read unless redirecting)."""

    status: int
    content_type: str | None
    location: str | None
    body: bytes = b""
    truncated: bool = False


def send(target: Target, method: str, headers: dict[str, str], body: bytes | None, *,
         deadline: float, max_bytes: int) -> Response:
    """Make one request to the target's checked address and read the response (the body up to
    ``max_bytes``; not for HEAD or a redirect), all before ``deadline``
    (time.monotonic() seconds). Raises socket.timeout when the deadline passed, OSError or
    http.client.HTTPException for other transport errors, ToolFailure for an unsupported
    Content-Encoding."""
    dog = _Watchdog([], deadline)
    resp: http.client.HTTPResponse | None = None
    try:
        with dog:
            conn = _connect(target, deadline, dog)
            conn.putrequest(method, target.path, skip_host=True, skip_accept_encoding=True)
            hdrs = {"Host": target.host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
            if body is not None:
                hdrs["Content-Length"] = str(len(body))
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            out = Response(resp.status, resp.getheader("Content-Type"), resp.getheader("Location"))
            if method != "HEAD" and not (out.status in REDIRECT_STATUSES and out.location):
                out.body, out.truncated = _read_body(resp, max_bytes)
    except (OSError, http.client.HTTPException):
        if dog.fired:
            raise socket.timeout("deadline reached") from None
        raise
    finally:
        if resp is not None:
            resp.close()
        for c in dog.conns:
            c.close()
    if dog.fired:  # a shut-down socket can look like a normal end of the body
        raise socket.timeout("deadline reached")
    return out


# ---------------------------------------------------------------------------- the tool

def _text(value: Any) -> str:
    """An argument as URL text: strings as they are, other values as JSON (true, 3, [1,2])."""
    return value if isinstance(value, str) else json.dumps(value)


def build_request(config: dict[str, Any], args: dict[str, Any]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """(method, url, body, extra headers) for a call: placeholders filled with URL-quoted
    arguments, the remaining arguments as JSON body (POST/PUT/PATCH, or ``body_arg``) or query
    parameters. Raises ToolFailure for a missing argument or URL."""
    method = str(config.get("method", "GET")).upper()
    args = dict(args or {})
    url = config.get("url")
    if url is None:
        url = args.pop("url", None)
        if not isinstance(url, str) or not url.strip():
            raise ToolFailure("argument 'url' (an http or https URL) is required")
    used = set(PLACEHOLDER.findall(url))
    missing = sorted(n for n in used if args.get(n) is None)
    if missing:
        raise ToolFailure(f"missing argument(s) for the URL: {', '.join(missing)}")
    url = PLACEHOLDER.sub(lambda m: quote(_text(args[m.group(1)]), safe=""), url)
    rest = {k: v for k, v in args.items() if k not in used}
    body, headers = None, {}
    if method in BODY_METHODS:
        value = rest.get(config["body_arg"]) if config.get("body_arg") else rest
        if isinstance(value, (dict, list)) or config.get("body_arg") is None:
            body, headers = json.dumps(value).encode(), {"Content-Type": "application/json"}
        elif value is not None:
            body, headers = _text(value).encode(), {"Content-Type": "text/plain; charset=utf-8"}
    elif rest:
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode({k: _text(v) for k, v in rest.items()})) if q)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return method, url, body, headers


def _redirect(method: str, status: int, body: bytes | None,
              headers: dict[str, str]) -> tuple[str, bytes | None, dict[str, str]]:
    """Method, body and headers for following a redirect: 303 (and 301/302 after a POST) become
    a GET without body; 307/308 repeat the request."""
    if status == 303 or (status in (301, 302) and method == "POST"):
        return ("HEAD" if method == "HEAD" else "GET"), None, {k: v for k, v in headers.items()
                                                                if k.lower() != "content-type"}
    return method, body, headers


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None, *,
          patterns: Iterable[str], exceptions: Iterable[str] = (), timeout_ms: int = 5000,
          max_bytes: int = DEFAULT_MAX_BYTES, max_redirects: int = DEFAULT_MAX_REDIRECTS,
          resolver: Resolver = socket.getaddrinfo) -> dict[str, Any]:
    """Make the request with every egress check, following up to ``max_redirects`` redirects
    (each target checked again from scratch); the whole call must finish within ``timeout_ms``
    ms. Returns the tool result (see the module doc). Raises ToolFailure whose message starts
    with the method and URL."""
    patterns, nets = list(patterns), [ipaddress.ip_network(n, strict=False) for n in exceptions]
    deadline = time.monotonic() + max(timeout_ms, 1) / 1000.0
    static = dict(headers or {})
    extra: dict[str, str] = {}
    redirects: list[str] = []
    first_origin = None
    while True:
        # recorded in the tool_result step when the call fails (status: None if no response)
        details: dict[str, Any] = {"method": method, "url": url, "status": None, "redirects": list(redirects)}
        try:
            target = check_url(url, patterns, nets, resolver)
            first_origin = first_origin or target.origin
            # static headers (which may carry credentials) go to the configured origin only
            sent = {**(static if target.origin == first_origin else {}), **extra}
            resp = send(target, method, sent, body, deadline=deadline, max_bytes=max_bytes)
        except ToolFailure as e:
            raise type(e)(_where(method, url, redirects) + str(e), details) from None
        except socket.timeout:
            raise ToolFailure(f"{_where(method, url, redirects)}timed out after {timeout_ms} ms", details) from None
        except ssl.SSLError as e:
            raise ToolFailure(f"{_where(method, url, redirects)}TLS error: {e}", details) from None
        except (OSError, http.client.HTTPException) as e:
            raise ToolFailure(f"{_where(method, url, redirects)}request failed: {type(e).__name__}: {e}",
                              details) from None
        if resp.status in REDIRECT_STATUSES and resp.location:
            if len(redirects) >= max_redirects:
                raise ToolFailure(f"{_where(method, url, redirects)}too many redirects (max_redirects {max_redirects})",
                                  {**details, "status": resp.status})
            url = urljoin(target.url, resp.location.strip())
            redirects.append(url)
            method, body, extra = _redirect(method, resp.status, body, extra)
            continue
        return {"method": method, "url": target.url, "status": resp.status, "content_type": resp.content_type,
                "body": _decode(resp.body, resp.content_type, resp.truncated), "truncated": resp.truncated,
                "redirects": redirects}


def _where(method: str, url: str, redirects: list[str]) -> str:
    """Message prefix naming the request: ``GET http://x/: `` (with the redirect count)."""
    hops = f" (after {len(redirects)} redirect(s))" if redirects else ""
    return f"{method} {url}{hops}: "


def egress_policy(ctx: ToolContext) -> tuple[list[str], list[str]]:
    """The tenant's allowlisted host patterns and exception networks (CIDR text)."""
    row = ctx.db.all(EGRESS_SQL, ["text"], [ctx.tenant_id])[0]
    return list(row["hosts"]), list(row["networks"])


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Make the configured request for ``args``; returns the result dict. Raises ToolFailure.
    Sends ``Idempotency-Key: <ctx.idempotency_key>`` (the same on a re-run of the same call after
    a crash; a header of the tool's config with that name wins), so that a server that dedupes on
    it runs the call once: an http call cannot commit with its tool_result step, it is
    at-least-once (docs/durability.md)."""
    config = tool.get("config") or {}
    method, url, body, extra = build_request(config, args)
    patterns, nets = egress_policy(ctx)
    key = {"Idempotency-Key": ctx.idempotency_key} if ctx.idempotency_key else {}
    return fetch(url, method, {**key, **(config.get("headers") or {}), **extra}, body, patterns=patterns,
                 exceptions=nets, timeout_ms=int(tool["timeout_ms"]),
                 max_bytes=int(config.get("max_bytes", DEFAULT_MAX_BYTES)),
                 max_redirects=int(config.get("max_redirects", DEFAULT_MAX_REDIRECTS)))


# ---------------------------------------------------------------------------- config

def _check_int(config: dict[str, Any], key: str, low: int, high: int) -> None:
    v = config.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high):
        raise ValueError(f"config.{key} must be an integer between {low} and {high}")


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config (see the module doc)."""
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    url = config.get("url")
    if url is not None:
        if not isinstance(url, str) or not re.match(r"^https?://[^/?#]", url, re.I):
            raise ValueError("config.url must be an http:// or https:// URL")
        try:
            parse_url(PLACEHOLDER.sub("x", url))
        except ToolFailure as e:
            raise ValueError(f"config.url: {e}") from None
    method = config.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"config.method must be one of {', '.join(METHODS)}")
    headers = config.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("config.headers must be an object of string values")
    for k, v in headers.items():
        if not HEADER_TOKEN.match(k) or k.lower() in FORBIDDEN_HEADERS or "\r" in v or "\n" in v:
            raise ValueError(f"config.headers: header {k!r} is not allowed")
    body_arg = config.get("body_arg")
    if body_arg is not None and (not isinstance(body_arg, str) or method.upper() not in BODY_METHODS):
        raise ValueError("config.body_arg must be an argument name, for POST, PUT or PATCH")
    _check_int(config, "max_bytes", 1, MAX_MAX_BYTES)
    _check_int(config, "max_redirects", 0, MAX_MAX_REDIRECTS)
