"""Options of ``raftcache serve``: one table of options read from flags, environment and TOML.

Rule: precedence is flags > environment (``RAFTCACHE_<OPTION>``) > config file (``--config`` or
``RAFTCACHE_CONFIG``, TOML) > defaults, option by option. Every source goes through the same
converter, so a value means the same wherever it comes from; anything invalid or unknown raises
``ConfigError`` with a message naming the option and the source.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from raftcache.cache.formats import COMMAND_VERSION, check_max_command_version
from raftcache.network.httpclient import CLIENTS
from raftcache.process.gcpolicy import POLICIES
from raftcache.slots import check_groups
from raftcache.store.layout import MAX_REPLICAS

ENV_PREFIX = "RAFTCACHE_"
#: Options whose values must never be echoed (error messages, repr, logs).
SECRET_OPTIONS = frozenset({"cluster_token", "client_token", "client_token_ro"})


class ConfigError(ValueError):
    """An option is missing, malformed or contradictory."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Everything ``raftcache serve`` needs, validated. Durations in seconds."""

    id: str
    host: str
    port: int
    peers: Mapping[str, str]
    data_dir: Path
    #: How this node reaches some peers, whatever address the replicated configuration names.
    peer_address_override: Mapping[str, str] = field(default_factory=dict)
    # Secrets stay out of repr(): options may end up in a log line or a traceback.
    cluster_token: str | None = field(default=None, repr=False)
    client_token: str | None = field(default=None, repr=False)
    client_token_ro: str | None = field(default=None, repr=False)
    #: Data groups the keyspace is split into, and replicas per group: fixed when the cluster
    #: is created (``raftcache.store.layout``); 1 group is the one-group node of old.
    groups: int = 1
    replicas: int = 3
    #: A store joining a running cluster: the base URL of any of its stores (first start).
    join: str | None = None
    #: This store's host label: placement never puts two replicas of a group on one host.
    host_label: str | None = None
    #: A store silent this long has its replicas replaced by the meta leader's driver.
    store_down_after_s: float = 300.0
    resp_port: int | None = None
    resp_cluster_port: int | None = None
    advertise_host: str | None = None
    #: The service name the Sentinel commands answer for (``SENTINEL MASTERS``, redis-py's
    #: ``Sentinel.master_for(name)``).
    sentinel_name: str = "raftcache"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_keys: int | None = None
    max_bytes: int | None = None
    max_value_bytes: int = 1024 * 1024
    max_batch_ops: int = 1000
    max_inflight_requests: int = 1024
    max_pending_writes: int = 512
    max_inflight_bytes: int = 256 * 1024 * 1024
    log_format: str = "text"
    log_level: str = "info"
    network_timeout_s: float = 2.0
    #: How this node sends Raft RPCs: ``http`` (one POST each) or ``stream`` (one multiplexed
    #: WebSocket per peer, HTTP for peers without it); and the HTTP transport's body format.
    raft_transport: str = "http"
    raft_wire: str = "json"
    #: What sends the Raft HTTP RPCs (same wire): ``auto`` = the lean httptools client when
    #: installed, else aiohttp.
    raft_http_client: str = "auto"
    #: A store sends the AppendEntries its groups make for one peer in one event-loop turn as
    #: one batch (``raftcache.network.batching``).
    raft_batch: bool = True
    election_timeout_min_s: float = 1.0
    election_timeout_max_s: float = 2.0
    heartbeat_interval_s: float = 0.1
    snapshot_threshold: int = 10_000
    snapshot_threshold_bytes: int = 32 * 1024 * 1024
    leader_wait_s: float = 2.0
    #: How long a write waits for its entry to commit and apply before its outcome is
    #: reported unknown (504/INDETERMINATE: a leader cut off mid-write answers after this).
    propose_timeout_s: float = 10.0
    shutdown_timeout_s: float = 10.0
    transfer_on_shutdown: bool = True
    watch_history: int = 100_000
    watch_history_bytes: int = 64 * 1024 * 1024
    watch_heartbeat_s: float = 5.0
    max_watchers: int = 256
    max_command_format: int = COMMAND_VERSION
    #: Seconds between the leader's replica digest comparisons (``raftcache.cache.divergence``;
    #: 0: only after a snapshot install or a local fault).
    digest_check_interval_s: float = 60.0
    #: The event loop (``auto``: uvloop when installed) and the HTTP front (``auto``: the lean
    #: httptools front for the hot key and Raft routes when installed, aiohttp for the rest).
    loop: str = "auto"
    http_front: str = "auto"
    #: The collector policy of a ``serve`` process (``raftcache.process.gcpolicy``).
    gc: str = "tuned"
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def listen(self) -> str:
        """``HOST:PORT`` as given."""
        return f"{self.host}:{self.port}"


def _command_format(text: str) -> int:
    return check_max_command_version(int(text))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _groups(text: str) -> int:
    return check_groups(int(text))


def _replicas(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"must be 1..{MAX_REPLICAS}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a finite number > 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def _non_empty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


# A DNS name: dot-separated labels of letters, digits, '-' (not at either end) and '_'.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


def is_unspecified(host: str) -> bool:
    """Whether ``host`` is a wildcard address (``0.0.0.0``, ``::``, or empty): one a client
    cannot connect to."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return not host


def _advertise_host(text: str) -> str:
    """A host name or an IP literal (IPv6 bare or in brackets, returned bare) that clients can
    connect to: never a wildcard address."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        top = text.rstrip(".").rpartition(".")[2]
        if bare is text and _HOSTNAME.fullmatch(text) and not top.isdigit():
            return text  # (a name whose last label is a number would be read as an address)
        raise ValueError(f"must be a host name or an IP address, not {text[:80]!r}") from None
    if address.is_unspecified:
        raise ValueError(f"{text} is a wildcard address: clients cannot connect to it")
    return bare


_SENTINEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _sentinel_name(text: str) -> str:
    """A Sentinel service name: 1-64 letters, digits, ``.``, ``_`` or ``-`` (what clients
    pass to ``master_for``; no spaces, which Sentinel replies could not carry)."""
    if not _SENTINEL_NAME.fullmatch(text):
        raise ValueError(f"must be 1-64 letters, digits, '.', '_' or '-', not {text[:80]!r}")
    return text


def _join_url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ValueError(f"must be a store's base URL, http(s)://HOST:PORT, not {text!r}")
    return url


def _choice(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text.lower()

    return convert


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8001`` for IPv6) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT")
    return host.strip("[]"), _port(port)


def parse_peers(text: str) -> dict[str, str]:
    """``ID=URL,ID=URL,...`` → {id: url} (URLs ``http(s)://host:port``, ids unique)."""
    peers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        node_id, sep, url = item.strip().partition("=")
        if not sep or not node_id or not url.startswith(("http://", "https://")):
            raise ValueError(f"{item!r} is not ID=http(s)://HOST:PORT")
        if node_id in peers:
            raise ValueError(f"node {node_id} listed twice")
        peers[node_id] = url.rstrip("/")
    if not peers:
        raise ValueError("must list at least one ID=URL")
    return peers


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its name (``dest``), converter from text, default and help."""

    name: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("id", _non_empty, None, "this node's id (must appear in --peers)", "ID"),
    Option("listen", parse_listen, None, "address to serve on", "HOST:PORT"),
    Option("peers", parse_peers, None, "every voting member, this node included", "ID=URL,..."),
    Option("data_dir", Path, None, "directory of the node's durable state", "DIR"),
    Option(
        "peer_address_override",
        parse_peers,
        None,
        "how this node reaches these peers, over the addresses in the membership",
        "ID=URL,...",
    ),
    Option("cluster_token", _non_empty, None, "bearer token of the Raft endpoints", "T"),
    Option("client_token", _non_empty, None, "bearer token of the client API (read-write)", "T"),
    Option("client_token_ro", _non_empty, None, "read-only bearer token of the client API", "T"),
    Option(
        "groups",
        _groups,
        1,
        "data groups (Raft groups) the keyspace's 16384 slots are split into, fixed when the "
        "cluster is created; 1 = one group on every node",
        "G",
    ),
    Option(
        "replicas",
        _replicas,
        3,
        "replicas of each data group (with --groups > 1), on distinct stores",
        "N",
    ),
    Option(
        "join",
        _join_url,
        None,
        "join a running sharded cluster through this store (its base URL), empty: replicas "
        "move onto this store; --peers and --groups then come from the cluster",
        "URL",
    ),
    Option(
        "host_label",
        _non_empty,
        None,
        "this store's host (default: the machine's name); placement puts no second replica "
        "of a group on one host, and moves apart those the bootstrap put there",
        "NAME",
    ),
    Option(
        "store_down_after_s",
        _positive_float,
        300.0,
        "seconds a store may stay silent before the meta leader replaces its replicas",
        "S",
    ),
    Option("resp_port", _port, None, "serve the Redis protocol (RESP2/3) on this port", "P"),
    Option(
        "resp_cluster_port",
        _port,
        None,
        "serve the Redis Cluster protocol on this port: MOVED to the leader (redis-py "
        "RedisCluster, redis-cli -c)",
        "P",
    ),
    Option(
        "advertise_host",
        _advertise_host,
        None,
        "host name or IP address clients are told to use in CLUSTER SLOTS, MOVED, ROLE and "
        "SENTINEL (default: "
        "the listen host, or this node's host in --peers when listening on all interfaces, "
        "else the machine's name)",
        "HOST",
    ),
    Option(
        "sentinel_name",
        _sentinel_name,
        "raftcache",
        "the service name the RESP ports' SENTINEL commands answer for (redis-py "
        "Sentinel.master_for(NAME))",
        "NAME",
    ),
    Option("tls_cert", Path, None, "TLS certificate (PEM)", "FILE"),
    Option("tls_key", Path, None, "TLS private key (PEM)", "FILE"),
    Option("tls_ca", Path, None, "CA for peer certificates: enables mutual TLS", "FILE"),
    Option("max_keys", _positive_int, None, "LRU bound on the number of keys", "N"),
    Option(
        "max_bytes",
        _positive_int,
        None,
        "LRU bound on keys + values bytes; unset: 25%% of a cgroup memory limit, else none",
        "N",
    ),
    Option("max_value_bytes", _positive_int, 1024 * 1024, "largest value accepted (413)", "N"),
    Option("max_batch_ops", _positive_int, 1000, "most ops in a batch or mget", "N"),
    Option(
        "max_inflight_requests",
        _positive_int,
        1024,
        "client requests served at once; more get 503",
        "N",
    ),
    Option("max_pending_writes", _positive_int, 512, "writes served at once; more get 503", "N"),
    Option(
        "max_inflight_bytes",
        _positive_int,
        256 * 1024 * 1024,
        "request body bytes held at once; more get 503",
        "N",
    ),
    Option("log_format", _choice("text", "json"), "text", "log line format", "text|json"),
    Option(
        "log_level",
        _choice("debug", "info", "warning", "error"),
        "info",
        "lowest level logged",
        "LEVEL",
    ),
    Option("network_timeout_s", _positive_float, 2.0, "Raft RPC timeout (s)", "S"),
    Option(
        "raft_transport",
        _choice("http", "stream"),
        "http",
        "Raft RPCs as one HTTP POST each, or framed on one upgraded connection per peer",
        "http|stream",
    ),
    Option(
        "raft_wire",
        _choice("json", "msgpack"),
        "json",
        "body format of Raft RPCs over HTTP (msgpack with peers that read it)",
        "json|msgpack",
    ),
    Option(
        "raft_http_client",
        _choice(*CLIENTS),
        "auto",
        "client sending Raft RPCs over HTTP (same wire); auto = lean (httptools) when installed",
        "auto|lean|aiohttp",
    ),
    Option(
        "raft_batch",
        _bool,
        True,
        "a store sends its groups' AppendEntries to one peer, made in one event-loop turn, "
        "as one batch (default true)",
        "true|false",
    ),
    Option("election_timeout_min_s", _positive_float, 1.0, "Raft election timeout, low (s)", "S"),
    Option("election_timeout_max_s", _positive_float, 2.0, "Raft election timeout, high (s)", "S"),
    Option("heartbeat_interval_s", _positive_float, 0.1, "Raft heartbeat interval (s)", "S"),
    Option("snapshot_threshold", _positive_int, 10_000, "applied entries between snapshots", "N"),
    Option(
        "snapshot_threshold_bytes",
        _positive_int,
        32 * 1024 * 1024,
        "applied command bytes between snapshots (bounds the log kept in memory)",
        "BYTES",
    ),
    Option("leader_wait_s", _positive_float, 2.0, "wait for a leader before 503 (s)", "S"),
    Option(
        "propose_timeout_s",
        _positive_float,
        10.0,
        "seconds a write waits for its entry to commit before answering that its outcome "
        "is unknown (504 on HTTP, INDETERMINATE on RESP)",
        "S",
    ),
    Option("shutdown_timeout_s", _positive_float, 10.0, "graceful shutdown bound (s)", "S"),
    Option(
        "transfer_on_shutdown",
        _bool,
        True,
        "a leader hands leadership over before it stops (default true)",
        "true|false",
    ),
    Option("watch_history", _positive_int, 100_000, "changes kept for watches (count)", "N"),
    Option(
        "watch_history_bytes",
        _positive_int,
        64 * 1024 * 1024,
        "changes kept for watches (bytes of keys and values)",
        "N",
    ),
    Option("watch_heartbeat_s", _positive_float, 5.0, "keep-alive period of watch streams", "S"),
    Option("max_watchers", _positive_int, 256, "watch streams served at once; more get 503", "N"),
    Option(
        "max_command_format",
        _command_format,
        COMMAND_VERSION,
        "newest command format this node applies (lower only to test a rolling upgrade)",
        "N",
    ),
    Option(
        "digest_check_interval_s",
        _non_negative_float,
        60.0,
        "seconds between the leader's comparisons of the replicas' state digests "
        "(0: only after snapshot installs)",
        "S",
    ),
    Option(
        "loop",
        _choice("auto", "asyncio", "uvloop"),
        "auto",
        "event loop; auto = uvloop (a dependency on CPython outside Windows), else asyncio",
        "auto|asyncio|uvloop",
    ),
    Option(
        "http_front",
        # lean-keys (not advertised): the key routes lean, the Raft routes on aiohttp — an A/B.
        _choice("auto", "lean", "aiohttp", "lean-keys"),
        "auto",
        "HTTP front; auto = httptools for the hot key and Raft routes when installed, else aiohttp",
        "auto|lean|aiohttp",
    ),
    Option(
        "gc",
        _choice(*POLICIES),
        "tuned",
        "garbage collector; tuned = freeze what lives at start and collect rarely "
        "(short pauses), default = CPython's settings",
        "tuned|default",
    ),
)
_BY_NAME = {opt.name: opt for opt in OPTIONS}
REQUIRED = ("id", "listen", "peers", "data_dir")


def _own_url(values: Mapping[str, Any]) -> str:
    """A joining store's own base URL: the advertised or listen host and the listen port."""
    listen = values.get("listen")
    if listen is None:
        raise ConfigError("missing required option(s): --listen")
    host, port = listen
    host = values.get("advertise_host") or host
    if is_unspecified(host):
        raise ConfigError(
            "--join with a wildcard --listen host needs --advertise-host or --peers naming "
            "this store's own address"
        )
    if port == 0:
        raise ConfigError("--join needs a fixed --listen port (other stores must reach it)")
    scheme = "https" if values.get("tls_cert") is not None else "http"
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return f"{scheme}://{shown}:{port}"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags to ``parser`` (every default is None: "not given")."""
    parser.add_argument("--config", default=None, metavar="FILE.toml", help="TOML config file")
    for opt in OPTIONS:
        flag = "--" + opt.name.removesuffix("_s").replace("_", "-")
        parser.add_argument(flag, dest=opt.name, default=None, metavar=opt.metavar, help=opt.help)
    parser.add_argument(
        "--no-transfer-on-shutdown",
        dest="transfer_on_shutdown",
        action="store_const",
        const="false",
        help="stop a leader without handing leadership over first",
    )


def _convert(opt: Option, raw: object, source: str) -> Any:
    try:
        if isinstance(raw, str):
            return opt.convert(raw)
        if opt.name in ("peers", "peer_address_override") and isinstance(raw, Mapping):
            return parse_peers(",".join(f"{k}={v}" for k, v in raw.items()))
        if isinstance(raw, bool):
            if opt.convert is _bool:
                return raw
            raise ValueError("must not be a boolean")
        if isinstance(raw, int | float):
            return opt.convert(str(raw))
        raise ValueError(f"unsupported value {raw!r}")
    except (ValueError, TypeError) as exc:
        flag = "--" + opt.name.removesuffix("_s").replace("_", "-")
        if opt.name in SECRET_OPTIONS:
            # Never echo a secret, not even a malformed one (it may be the right token).
            raise ConfigError(f"{flag} ({source}): must be a non-empty string") from None
        raise ConfigError(f"{flag} ({source}): {exc}") from None


def load_config_file(path: Path) -> dict[str, object]:
    """Read a TOML config file: keys are option names (``-`` or ``_``), unknown keys refused."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, object] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _BY_NAME and name + "_s" in _BY_NAME:
            name += "_s"
        if name not in _BY_NAME:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        values[name] = value
    return values


def resolve_options(
    flags: Mapping[str, object], env: Mapping[str, str], *, config_path: str | None = None
) -> ServeOptions:
    """Merge the sources (flags > env > file > defaults) and validate the result.

    Args:
        flags: option name → value given on the command line (None or absent: not given).
        env: the environment (only ``RAFTCACHE_*`` variables are read).
        config_path: the ``--config`` flag; else ``RAFTCACHE_CONFIG``; else no file.
    """
    path = config_path or env.get(ENV_PREFIX + "CONFIG") or None
    file_values = load_config_file(Path(path)) if path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        env_name = ENV_PREFIX + opt.name.removesuffix("_s").upper()
        if flags.get(opt.name) is not None:
            values[opt.name] = _convert(opt, flags[opt.name], "flag")
            sources[opt.name] = "flag"
        elif env.get(env_name):
            values[opt.name] = _convert(opt, env[env_name], f"env {env_name}")
            sources[opt.name] = "env"
        elif opt.name in file_values:
            values[opt.name] = _convert(opt, file_values[opt.name], f"file {path}")
            sources[opt.name] = "file"
        else:
            values[opt.name] = opt.default
            sources[opt.name] = "default"
    return _build(values, sources)


def _build(values: dict[str, Any], sources: dict[str, str]) -> ServeOptions:
    if values["join"] is not None and values["peers"] is None and values["id"] is not None:
        values["peers"] = {values["id"]: _own_url(values)}
    missing = [name for name in REQUIRED if values[name] is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"missing required option(s): {flags}")
    if values["id"] not in values["peers"]:
        raise ConfigError(f"--id {values['id']} is not listed in --peers")
    dotted = sorted(p for p in values["peers"] if "." in p)
    if (values["groups"] > 1 or values["join"] is not None) and dotted:
        # A replica moved onto a store is named <store>.<n> (docs/sharding.md).
        raise ConfigError(
            f"--groups {values['groups']}: store ids hold no '.', got {', '.join(dotted[:3])}"
        )
    if values["peer_address_override"] is None:
        values["peer_address_override"] = {}
    elif values["id"] in values["peer_address_override"]:
        raise ConfigError(f"--peer-address-override names this node ({values['id']}) itself")
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if values["tls_ca"] is not None and values["tls_cert"] is None:
        raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
    ports = [values["resp_port"], values["resp_cluster_port"]]
    if None not in ports and ports[0] == ports[1] != 0:
        raise ConfigError("--resp-port and --resp-cluster-port must differ")
    host, port = values.pop("listen")
    if port != 0 and port in ports:
        raise ConfigError(f"port {port} is both --listen's and a RESP port")
    return ServeOptions(host=host, port=port, sources=sources, **values)
