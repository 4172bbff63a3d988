"""CurveZMQ encryption and client authentication for the stream.

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

import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigError

AUTHORIZED = "authorized_clients"


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

    p = argparse.ArgumentParser(prog="smplstream keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    args = p.parse_args(argv)
    out = generate_keys(args.directory)
    print(f"wrote server and client key pairs to {out}; publisher: --curve-keys {out} "
          f"(needs server.key_secret, {AUTHORIZED}/); subscriber: --curve-keys DIR with client.key_secret "
          "and server.key")
    return 0
