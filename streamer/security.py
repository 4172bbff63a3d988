"""Keeping the stream and its secrets safe: credentials in source URLs redacted wherever a
source is shown or stored, CurveZMQ encryption and client authentication for the stream.

A source such as ``rtsp://user:password@camera/stream?token=...`` is opened with its real
URL, and shown everywhere else (wire header, logs, stats, errors) as
:func:`redact_url` gives it: ``rtsp://***@camera/stream?token=***``.

``smplstream keys DIR`` writes one key pair for the publisher (``server``) and one for a
subscriber (``client``), and authorises that client:

    DIR/server.key, DIR/server.key_secret      the publisher's pair
    DIR/client.key, DIR/client.key_secret      a subscriber's pair
    DIR/authorized_clients/client.key          public keys the publisher accepts

The publisher machine needs ``server.key_secret`` and ``authorized_clients/``; a subscriber
machine needs ``client.key_secret`` and ``server.key`` (the publisher's public key). More
subscribers: generate more pairs and drop their public ``.key`` into
``authorized_clients/``. Both ends then pass ``--curve-keys DIR``; traffic is encrypted and
a subscriber whose key is not authorised receives nothing.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigError

AUTHORIZED = "authorized_clients"


#: Query parameters whose values are credentials (compared in lower case).
SECRET_QUERY_KEYS = frozenset({"token", "access_token", "auth", "authorization", "key", "apikey", "api_key",
                               "password", "passwd", "pass", "pwd", "secret", "signature", "sig", "credential",
                               "credentials", "session", "sessionid"})
REDACTED = "***"


def _is_secret_key(name: str) -> bool:
    name = name.lower()
    return name in SECRET_QUERY_KEYS or any(k in name for k in ("token", "secret", "passw"))


def _secret_spans(url: str) -> list[str]:
    """The substrings of ``url`` that are credentials: its userinfo and the values of
    secret-looking query parameters (as written, and percent-decoded)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
        if parts.password:
            found.append(parts.password)
    for query in (parts.query, parts.fragment):
        for raw in query.split("&"):
            name, _, value = raw.partition("=")
            if value and _is_secret_key(name):
                found.append(value)
    return [f for s in found for f in {s, unquote(s)} if len(f) >= 3]


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***``: the userinfo (``user:password@``)
    and the values of query parameters such as ``token``, ``key``, ``password``, ``auth``.
    Anything that is not a URL comes back as it is."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]

    def clean(query: str) -> str:
        out = []
        for raw in query.split("&"):
            name, eq, value = raw.partition("=")
            out.append(f"{name}{eq}{REDACTED}" if value and _is_secret_key(name) else raw)
        return "&".join(out)

    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        rebuilt += "?" + clean(parts.query)
    if parts.fragment:
        rebuilt += "#" + clean(parts.fragment)
    return rebuilt


class Redactor:
    """Replaces the credentials of some URLs in any text; as a logging filter (installed on
    the handlers by :meth:`install`) it cleans every record before it is written."""

    def __init__(self, *urls: str | None):
        spans = {s for u in urls if u for s in _secret_spans(str(u))}
        # Longest first, so a password inside the userinfo is not left half replaced.
        self.pattern = re.compile("|".join(map(re.escape, sorted(spans, key=len, reverse=True)))) if spans else None

    def __call__(self, text: str) -> str:
        return text if self.pattern is None else self.pattern.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pattern is not None:
            message = record.getMessage()
            clean = self(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True

    def install(self) -> None:
        """Filter every handler of the root logger (the records of all loggers end there)."""
        if self.pattern is not None:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)


def reject_nul(value: str | Path | None, what: str) -> None:
    """Raise :class:`ConfigError` if ``value`` (a path or endpoint given as ``what``) holds a
    NUL byte: the operating system would cut the name there (ZeroMQ silently binds the
    shorter ``ipc://`` path) or Python would raise mid-run."""
    if value is not None and "\0" in str(value):
        raise ConfigError(f"{what} {str(value)!r} contains a NUL byte")


def generate_keys(directory: str | Path) -> Path:
    """Create the server and client key pairs in ``directory`` and authorise the client."""
    directory = Path(directory)
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support (reinstall pyzmq from its wheels)")
    if (directory / "server.key_secret").exists():
        raise ConfigError(f"{directory}: keys exist already (remove them or choose another directory)")
    try:
        (directory / AUTHORIZED).mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(str(directory), "server")
        client_public, _ = zmq.auth.create_certificates(str(directory), "client")
        shutil.copy(client_public, directory / AUTHORIZED / "client.key")
    except OSError as exc:
        raise ConfigError(f"cannot write keys to {directory}: {exc.strerror or exc}") from None
    for secret in directory.glob("*.key_secret"):
        secret.chmod(0o600)
    return directory


def _load(path: Path, what: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"--curve-keys: {path} is missing ({what}; make keys with `smplstream keys DIR`)")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--curve-keys: {path} is not a ZeroMQ certificate ({exc})") from None


def secure_publisher(socket: zmq.Socket, directory: str | Path, context: zmq.Context) -> ThreadAuthenticator:
    """Make ``socket`` (before bind) a CURVE server that accepts only authorised clients.
    Returns the running authenticator; stop it when the socket closes."""
    directory = Path(directory)
    public, secret = _load(directory / "server.key_secret", "the publisher's secret key")
    allowed = directory / AUTHORIZED
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise ConfigError(f"--curve-keys: {allowed} holds no client public keys (*.key): nobody could subscribe")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(allowed))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def secure_subscriber(socket: zmq.Socket, directory: str | Path) -> None:
    """Make ``socket`` (before connect) a CURVE client of the publisher whose public key is
    ``server.key`` in ``directory``, using ``client.key_secret`` as its own pair."""
    directory = Path(directory)
    public, secret = _load(directory / "client.key_secret", "this subscriber's secret key")
    server_public, _ = _load(directory / "server.key", "the publisher's public key")
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def main(argv: list[str] | None = None) -> int:
    """``smplstream keys DIR``."""
    import argparse

    # The keys part of the module's docstring, without its markup.
    keys_doc = __doc__[__doc__.index("``smplstream keys DIR``"):].replace("``", "")
    p = argparse.ArgumentParser(prog="smplstream keys", description=keys_doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    args = p.parse_args(argv)
    out = generate_keys(args.directory)
    print(f"wrote server and client key pairs to {out}; publisher: --curve-keys {out} "
          f"(needs server.key_secret, {AUTHORIZED}/); subscriber: --curve-keys DIR with client.key_secret "
          "and server.key")
    return 0
