"""``pipeline stack up | status | down | logs``: the local Kafka + Elasticsearch + PostgreSQL.

``up`` works in this order:

1. reuse whatever already answers at the configured addresses (started by us or anyone);
2. check Java 17+, mvn, the PostgreSQL server and the ports each missing component needs;
3. fetch the missing distributions from Maven Central (once, into ``<home>/dist``);
   PostgreSQL comes from Debian's packages instead (``initdb`` once, see ``postgres_node``);
4. write the configuration into ``<home>/state`` and start the processes in the background;
5. wait until each answers its health check, or stop it and report the tail of its log.

Every start is recorded (pid + start time) in ``<home>/state/processes.json``; ``down`` stops
only those records' processes.

With ``secure=True`` it manages the secure stack instead (:mod:`pipeline.stack.secure`): its own
home, ports and credentials, Kafka on SASL_SSL, Elasticsearch on HTTPS with a password and
PostgreSQL with TLS; certificates and credentials are made before the first start.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from pipeline.settings import PipelineSettings
from pipeline.stack import elasticsearch_node, kafka_node, postgres_node, processes
from pipeline.stack.certificates import write_private
from pipeline.stack.distribution import fetch_elasticsearch, fetch_kafka
from pipeline.stack.health import Health, elasticsearch_health, kafka_health
from pipeline.stack.log_tail import cause_lines, log_size
from pipeline.stack.preflight import (
    StackError,
    ensure_port_free,
    find_java,
    find_mvn,
    is_local_host,
    port_answers,
    split_host_port,
)
from pipeline.stack.secure import KAFKA_MECHANISM, USERNAME, Credentials, SecureStack, redact
from pipeline.stack.stack_lock import held_lock
from pipeline.stack.status import COMPONENTS, Component, StackStatus, runs_at
from pipeline.stack.system_user import ensure_system_user, hand_over

#: Without a terminal, a step of ``up`` still going after this long is said on a line.
_SLOW_STEP_S = 1.0


class StackManager:
    """Owns the local stack's folders and processes; clients come from the settings."""

    def __init__(
        self, settings: PipelineSettings, console: Console | None = None, *, secure: bool = False
    ) -> None:
        self.secure = SecureStack(settings) if secure else None
        self._credentials: Credentials | None = None
        #: Why the secure stack's stored credentials could not be read: ``up``, ``status`` and
        #: the clients' settings need them and refuse with it; ``down`` (``--purge``, which
        #: deletes them, included) and the logs do without.
        self._unreadable: StackError | None = None
        if self.secure is not None:
            try:
                self._credentials = self.secure.load_credentials()
            except StackError as error:
                self._unreadable = error
            settings = self.secure.settings_with(self._credentials)
        self._settings = settings
        self._stack = settings.stack
        self._console = console or Console(stderr=True, quiet=True)
        self.dist_dir = self._stack.dist_dir or self._stack.home / "dist"
        self.state_dir = self._stack.home / "state"
        self._records_file = self.state_dir / "processes.json"
        #: What the current ``up`` has spawned (stopped again if it fails or is interrupted).
        self._started_now: set[Component] = set()
        #: Where each log ended before this run started its component: a start's own lines.
        self._log_starts: dict[str, int] = {}

    @property
    def settings(self) -> PipelineSettings:
        """The settings of this stack's clients (the secure stack's, with ``secure=True``)."""
        self._require_credentials()
        return self._settings

    def _require_credentials(self) -> None:
        if self._unreadable is not None:
            raise self._unreadable

    # ---- queries -------------------------------------------------------------------------

    def running(self) -> dict[str, processes.ProcessRecord]:
        """The processes this stack started that are still running, by component."""
        return {
            name: record
            for name, record in processes.load_records(self._records_file).items()
            if processes.find(record) is not None
        }

    def status(self) -> StackStatus:
        self._require_credentials()
        records = self.running()
        checked = self._checked_addresses()
        kafka = records.get("kafka")
        if kafka is not None and not runs_at(kafka, checked["kafka"]):
            kafka = None  # ours runs elsewhere: its release is not that Kafka's
        return StackStatus(
            kafka=self._with_version(kafka_health(self._settings.kafka), kafka),
            elasticsearch=elasticsearch_health(self._settings.elasticsearch),
            records=records,
            postgres=postgres_node.postgres_health(self._stack),
            checked=checked,
        )

    def _checked_addresses(self) -> dict[str, str]:
        """The ``host:port`` each component's health is checked at."""
        checked = {
            "kafka": self._settings.kafka.bootstrap_servers.split(",")[0].strip(),
            "postgres": f"{postgres_node.HOST}:{self._stack.postgres_port}",
        }
        try:
            host, port = split_host_port(self._settings.elasticsearch.url)
        except StackError:  # not checked either (its health says why)
            return checked
        return {**checked, "elasticsearch": f"{host}:{port}"}

    @staticmethod
    def _with_version(health: Health, record: processes.ProcessRecord | None) -> Health:
        # Kafka's protocol does not report the broker's release; we know it for what we started.
        if record is None or not health.ok:
            return health
        return Health(health.name, health.address, health.ok, health.detail, record.version, True)

    def log_path(self, component: Component) -> Path:
        record = processes.load_records(self._records_file).get(component)
        if record is not None:
            return Path(record.log)
        return self.state_dir / component / f"{component}.log"

    # ---- up ------------------------------------------------------------------------------

    def up(self, only: set[Component] | None = None) -> set[Component]:
        """Make the components (all, or ``only`` those) answer; returns the ones started."""
        wanted = set(COMPONENTS) if only is None else only
        self._require_credentials()
        with self._lock():
            if self.secure is not None:
                self._credentials = self.secure.prepare()
                self._settings = self.secure.settings(self._credentials)
                self._stack = self._settings.stack
            # A component counts as started by this run from the moment its process is spawned
            # (so an interrupted start is stopped too), never before: a refusal before that (a
            # port taken by something unhealthy, our own server of an earlier run included) must
            # not stop what was running. Each health check is made once: on a port that accepts
            # and stays silent it waits out its timeout.
            self._started_now = set()
            try:
                if "kafka" in wanted:
                    health = kafka_health(self._settings.kafka)
                    if not health.ok:
                        self._start_kafka(health)
                if "elasticsearch" in wanted:
                    health = elasticsearch_health(self._settings.elasticsearch)
                    if not health.ok:
                        self._start_elasticsearch(health)
                if "postgres" in wanted:
                    health = postgres_node.postgres_health(self._stack)
                    if not health.ok:
                        self._start_postgres(health)
            except BaseException:
                # Its own error, if it cannot write the records either: the one raised says why.
                with contextlib.suppress(OSError):
                    self._stop(self._started_now)
                raise
            return set(self._started_now)

    def _start_kafka(self, health: Health) -> None:
        host, port = split_host_port(self._settings.kafka.bootstrap_servers.split(",")[0])
        self._require_local("Kafka", host)
        if health.port_open:
            raise StackError(
                f"port {port} is taken by something that is not a healthy Kafka ({health.detail})"
            )
        ensure_port_free(
            host,
            self._stack.kafka_controller_port,
            "the Kafka controller",
            "PIPELINE_STACK__KAFKA_CONTROLLER_PORT",
        )
        java = find_java()
        with self._progress(f"Fetching Kafka {self._stack.kafka_version} from Maven Central"):
            distribution = fetch_kafka(
                find_mvn,
                self.dist_dir,
                self._stack.kafka_version,
                self._stack.kafka_scala_version,
            )
        folder = self.state_dir / "kafka"
        data = folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        # Every event is in there: the broker's alone, as PostgreSQL keeps its own (another
        # local user read a secured stack's events from the segments without any password).
        data.chmod(0o700)
        properties = folder / "server.properties"
        format_extra: list[str] = []
        if self.secure is not None and self._credentials is not None:
            password = self._credentials.kafka.get_secret_value()
            certificates = self.secure.certificates
            write_private(
                properties,
                kafka_node.secure_server_properties(
                    host,
                    port,
                    self._stack.kafka_controller_port,
                    data,
                    username=USERNAME,
                    password=password,
                    server_certificate_pem=certificates.server_certificate.read_text(),
                    server_key_pem=certificates.server_key.read_text(),
                    ca_certificate=certificates.ca_certificate,
                ).encode(),
            )
            format_extra = kafka_node.scram_arguments(KAFKA_MECHANISM, USERNAME, password)
        else:
            properties.write_text(
                kafka_node.server_properties(host, port, self._stack.kafka_controller_port, data)
            )
        log4j = folder / "log4j.properties"
        log4j.write_text(kafka_node.LOG4J_PROPERTIES)
        log = folder / "kafka.log"
        if not (data / "meta.properties").exists():
            cluster_id = kafka_node.new_cluster_id()
            command = kafka_node.format_command(
                java, distribution, properties, log4j, cluster_id, format_extra
            )
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=120, check=False
            )
            if result.returncode != 0:
                output = f"{result.stdout[-300:]}{result.stderr[-300:]}"
                raise StackError(
                    f"formatting Kafka's storage failed: {redact(output, self._credentials)}"
                )
        command = kafka_node.server_command(
            java, distribution, properties, log4j, self._stack.kafka_heap
        )
        self._starting("kafka", log)
        record = processes.spawn("kafka", command, log, distribution.version, f"{host}:{port}")
        self._remember(record)
        self._await(record, lambda: kafka_health(self._settings.kafka), "Kafka")

    def _start_elasticsearch(self, health: Health) -> None:
        host, port = split_host_port(self._settings.elasticsearch.url)
        self._require_local("Elasticsearch", host)
        if health.port_open:
            raise StackError(
                f"port {port} is taken by something that is not a healthy Elasticsearch "
                f"({health.detail})"
            )
        ensure_port_free(
            host,
            self._stack.elasticsearch_transport_port,
            "Elasticsearch's transport",
            "PIPELINE_STACK__ELASTICSEARCH_TRANSPORT_PORT",
        )
        java = find_java()
        version = self._stack.elasticsearch_version
        with self._progress(f"Fetching Elasticsearch {version} from Maven Central"):
            distribution = fetch_elasticsearch(find_mvn, self.dist_dir, version)
        user = elasticsearch_node.run_as_user(self._stack.elasticsearch_user)
        if user is not None:
            ensure_system_user(user)
        folder = self.state_dir / "elasticsearch"
        conf, data, logs = folder / "config", folder / "data", folder / "logs"
        for path in (conf, data, logs):
            path.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)  # the indexed documents: the node's alone (see Kafka's data above)
        for name in ("jvm.options", "log4j2.properties"):
            shutil.copy2(distribution.home / "config" / name, conf / name)
        (conf / "jvm.options.d").mkdir(exist_ok=True)
        transport_port = self._stack.elasticsearch_transport_port
        if self.secure is not None and self._credentials is not None:
            (conf / "elasticsearch.yml").write_text(
                elasticsearch_node.secure_elasticsearch_yml(host, port, transport_port, data, logs)
            )
            self._write_elasticsearch_security(conf, self.secure, self._credentials)
        else:
            (conf / "elasticsearch.yml").write_text(
                elasticsearch_node.elasticsearch_yml(host, port, transport_port, data, logs)
            )
        if user is not None:
            hand_over(self._stack.home, folder, user)
        pid_file = folder / "elasticsearch.pid"
        command = elasticsearch_node.server_command(
            java, distribution, conf, pid_file, self._stack.elasticsearch_heap, user
        )
        self._starting("elasticsearch", folder / "elasticsearch.log")
        record = processes.spawn(
            "elasticsearch",
            command,
            folder / "elasticsearch.log",
            distribution.version,
            f"{host}:{port}",
        )
        self._remember(record)
        self._await(
            record, lambda: elasticsearch_health(self._settings.elasticsearch), "Elasticsearch"
        )
        self._remember(processes.adopt(record, pid_file))  # the server, not its launcher

    @staticmethod
    def _write_elasticsearch_security(
        conf: Path, secure: SecureStack, credentials: Credentials
    ) -> None:
        """The certificate files and the file realm's user, in the node's config folder."""
        certs = conf / elasticsearch_node.CERTS_FOLDER
        certs.mkdir(exist_ok=True)
        files = secure.certificates
        write_private(certs / "server.key", files.server_key.read_bytes())
        for source in (files.server_certificate, files.ca_certificate):
            shutil.copyfile(source, certs / source.name)
        users, roles = elasticsearch_node.file_realm_users(
            USERNAME, credentials.elasticsearch.get_secret_value(), os.urandom(32)
        )
        write_private(conf / "users", users.encode())
        write_private(conf / "users_roles", roles.encode())

    def _start_postgres(self, health: Health) -> None:
        port = self._stack.postgres_port
        if health.port_open:
            raise StackError(
                f"port {port} is taken by something that is not a healthy PostgreSQL "
                f"({health.detail})"
            )
        bin_dir = postgres_node.find_bin_dir(
            self._stack.postgres_bin_dir, postgres_node.pg_config_bindir()
        )
        version = postgres_node.server_version(bin_dir)
        user = postgres_node.run_as_user(self._stack.postgres_user)
        group = None
        if user is not None:
            ensure_system_user(user, "PostgreSQL")
            group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        folder = self.state_dir / "postgres"
        data, sockets = folder / "data", folder / "run"
        sockets.mkdir(parents=True, exist_ok=True)
        if user is not None:
            hand_over(self._stack.home, folder, user)
        if not (data / "PG_VERSION").exists():
            self._init_postgres(bin_dir, data, user, group)
        made_by = (data / "PG_VERSION").read_text().strip()
        if made_by != postgres_node.major(version):
            raise StackError(
                f"the cluster in {data} was made by PostgreSQL {made_by}, but the server found "
                f"is {version} ({bin_dir}); point PIPELINE_STACK__POSTGRES_BIN_DIR at a "
                f"{made_by} server or delete the cluster (pipeline stack down --purge)"
            )
        self._configure_postgres(data, sockets, port, user)
        command = postgres_node.as_user(postgres_node.server_command(bin_dir, data), user, group)
        self._starting("postgres", folder / "postgres.log")
        record = processes.spawn(
            "postgres", command, folder / "postgres.log", version, f"127.0.0.1:{port}"
        )
        self._remember(record)
        self._await(record, lambda: postgres_node.postgres_health(self._stack), "PostgreSQL")

    def _init_postgres(
        self, bin_dir: Path, data: Path, user: str | None, group: str | None
    ) -> None:
        """initdb, then the role and its database in single-user mode; all or nothing."""
        folder = data.parent
        shutil.rmtree(data, ignore_errors=True)  # what a failed first start may have left
        steps: list[tuple[str, list[str], str | None]] = [
            ("initdb", postgres_node.initdb_command(bin_dir, data), None),
            (
                "creating the role and database",
                postgres_node.single_user_command(bin_dir, data),
                postgres_node.bootstrap_sql(
                    self._stack.postgres_role,
                    self._stack.postgres_password.get_secret_value(),
                    self._stack.postgres_database,
                ),
            ),
        ]
        with (
            self._progress(f"Creating the PostgreSQL cluster in {data}"),
            postgres_node.cluster_removed_unless_made(data),
        ):
            for what, command, stdin in steps:
                result = subprocess.run(
                    postgres_node.as_user(command, user, group),
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    cwd=folder,
                    check=False,
                )
                output = f"{result.stdout}{result.stderr}"
                if result.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
                    last = " | ".join(line.strip() for line in output.strip().splitlines()[-5:])
                    raise StackError(f"{what} of PostgreSQL failed: {last or '(no output)'}")

    def _configure_postgres(self, data: Path, sockets: Path, port: int, user: str | None) -> None:
        """Our settings and authentication, rewritten on every start (the port may change)."""
        main_conf = data / "postgresql.conf"
        main_conf.write_text(postgres_node.with_include(main_conf.read_text()))
        conf, hba = postgres_node.postgresql_conf(port, sockets), postgres_node.pg_hba_conf()
        private: list[Path] = []
        if self.secure is not None:
            # The server's own copies: it wants its key owned by its user, mode 0600.
            certificate, key = data / "server.crt", data / "server.key"
            shutil.copyfile(self.secure.certificates.server_certificate, certificate)
            write_private(key, self.secure.certificates.server_key.read_bytes())
            private = [certificate, key]
            conf = postgres_node.secure_postgresql_conf(port, sockets, certificate, key)
            hba = postgres_node.secure_pg_hba_conf()
        files = {
            data / "pipeline.conf": conf,
            data / "pg_hba.conf": hba,
            data / "pg_ident.conf": postgres_node.pg_ident_conf(
                [user or elasticsearch_node.current_user(), "root"]
            ),
        }
        for path, text in files.items():
            path.write_text(text)
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (main_conf, *files, *private):
                os.chown(path, entry.pw_uid, entry.pw_gid)
                path.chmod(0o600)

    def _await(
        self, record: processes.ProcessRecord, check: Callable[[], Health], what: str
    ) -> None:
        deadline = time.monotonic() + self._stack.start_timeout_s
        with self._progress(f"Waiting for {what} at {record.address}"):
            while time.monotonic() < deadline:
                if check().ok:
                    return
                if processes.find(record) is None:
                    code = processes.exit_code(record)
                    raise StackError(
                        f"{what} exited during start (exit code {code}); "
                        f"last lines of {record.log}: {self._tail_of(record)}"
                    )
                time.sleep(0.5)
        # Read before it is stopped: after, the log's last lines were its reaction to the stop
        # (a Kafka stack trace), not why it was slow.
        tail = self._tail_of(record)
        processes.stop(record)
        raise StackError(
            f"{what} did not answer within {self._stack.start_timeout_s:g} s; "
            f"last lines of {record.log}: {tail}"
        )

    def _tail_of(self, record: processes.ProcessRecord) -> str:
        since = self._log_starts.get(record.name, 0)
        return redact(cause_lines(Path(record.log), since), self._credentials)

    def _starting(self, name: Component, log: Path) -> None:
        """``name`` is started now, its output appended to ``log`` from its present end."""
        self._started_now.add(name)
        self._log_starts[name] = log_size(log)

    @staticmethod
    def _require_local(what: str, host: str) -> None:
        if not is_local_host(host):
            raise StackError(
                f"{what} at {host} does not answer, and only a local address (127.0.0.1) can be "
                "started by `pipeline stack up`"
            )

    # ---- down ----------------------------------------------------------------------------

    def down(self, only: set[Component] | None = None, purge: bool = False) -> list[str]:
        """Stop the processes we started (all, or ``only`` those); returns what was stopped.

        ``purge``: also delete their data (Kafka's topics, Elasticsearch's indices,
        PostgreSQL's databases, with their logs and configuration). With ``only``, just those
        components' folders: the others' data and process records stay. Without, the whole
        state folder, and for the secure stack its credentials too (the next ``up`` makes new
        ones, for the new data).
        """
        if not self.state_dir.exists():  # nothing ever ran here: not even a folder to make
            if purge and only is None and self.secure is not None:
                self.secure.remove_credentials()
            return []
        with self._lock():
            stopped = self._stop(set(COMPONENTS) if only is None else only)
            if purge:
                self._refuse_purge_under_a_server(set(COMPONENTS) if only is None else only)
            if purge and only is not None:
                for name in only:
                    shutil.rmtree(self.state_dir / name, ignore_errors=True)
            elif purge:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                if self.secure is not None:
                    self.secure.remove_credentials()
            return stopped

    def _refuse_purge_under_a_server(self, components: set[Component]) -> None:
        """A :class:`StackError` when something still answers where a component to purge
        listens: a server started from this folder and no longer recorded would lose its data
        under it (and the port stay taken). Nothing is purged then."""
        checked = self._checked_addresses()
        for name in components:
            address = checked.get(name)
            if address is None or not (self.state_dir / name).exists():
                continue
            host, port = split_host_port(address)
            if port_answers(host, port):
                raise StackError(
                    f"{name}'s data in {self.state_dir / name} is kept: something still answers "
                    f"at {address}, though no {name} this stack recorded runs (one started from "
                    "this folder whose recorded process was killed, say); stop it first, then "
                    "purge"
                )

    def _stop(self, components: set[Component]) -> list[str]:
        records = processes.load_records(self._records_file)
        stopped: list[str] = []
        # Reverse start order: PostgreSQL first, then Elasticsearch, Kafka last.
        for name in reversed(COMPONENTS):
            record = records.get(name)
            if name not in components or record is None:
                continue
            stop = postgres_node.stop_fast if name == "postgres" else processes.stop
            if stop(record):
                stopped.append(name)
            del records[name]
        processes.save_records(self._records_file, records)
        return stopped

    # ---- helpers -------------------------------------------------------------------------

    def _remember(self, record: processes.ProcessRecord) -> None:
        """Record a process just started; else stop it (unrecorded, no ``down`` could)."""
        try:
            records = processes.load_records(self._records_file)
            records[record.name] = record
            processes.save_records(self._records_file, records)
        except OSError as error:
            processes.stop(record)
            raise StackError(
                f"cannot record {record.name}'s process in {self._records_file} "
                f"({error.strerror or error}): it was stopped again; free space or allow "
                f"writing in {self.state_dir}"
            ) from None

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return held_lock(self.state_dir, self._stack.home, self._console.print)

    @contextmanager
    def _progress(self, message: str) -> Iterator[None]:
        if self._console.is_terminal:
            with self._console.status(message):
                yield
            return
        # No terminal (CI, a file): no spinner, so a step still going after a second says so on
        # a line of its own; a first `up` fetching for minutes printed nothing until the end.
        said = threading.Timer(_SLOW_STEP_S, self._console.print, [f"{message} ..."])
        said.daemon = True
        said.start()
        try:
            yield
        finally:
            said.cancel()
