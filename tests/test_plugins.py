"""The plugin host: registries, loading (built-ins, entry points, failures), disabling, start-up calls,
the default replication plugins, and ``funnelkvs plugins``."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import funnelkvs
from funnelkvs import hookimpl
from funnelkvs.config.registries import problems_with_names
from funnelkvs.contributions import (
    ConflictResolverSpec,
    MetricsExporterSpec,
    ReplicationStrategySpec,
    StorageBackendSpec,
)
from funnelkvs.errors import ConfigError, PluginError, StorageError
from funnelkvs.keyspace import RING_SIZE
from funnelkvs.metrics import NodeMetrics
from funnelkvs.plugins import DEFAULT_PLUGINS, PluginHost, Registry
from funnelkvs.replication import LastWriterWins, NodeRef, RingView, SuccessorListStrategy, Version, Versioned
from funnelkvs.settings import PluginSettings, ReplicationSettings, Settings, StorageSettings
from funnelkvs.storage.memory import MemoryBackend
from funnelkvs.testing.cluster import NodeProcess, funnelkvs_command

NO_AUTOLOAD = PluginSettings(autoload=False)


def load(
    settings: PluginSettings = NO_AUTOLOAD, env: dict[str, str] | None = None, **plugins: object
) -> PluginHost:
    return PluginHost.load(settings, env or {}, plugins=plugins)


def plugin(**hooks: Any) -> SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    return SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def backend_spec(name: str, factory: Any = None, persistent: bool = False) -> StorageBackendSpec:
    return StorageBackendSpec(
        name, factory or (lambda path, options: MemoryBackend()), f"{name} test backend", persistent
    )


def backends_plugin(*specs: StorageBackendSpec) -> SimpleNamespace:
    def funnelkvs_register_storage_backends() -> list[StorageBackendSpec]:
        return list(specs)

    return plugin(funnelkvs_register_storage_backends=funnelkvs_register_storage_backends)


def exporters_plugin(*specs: MetricsExporterSpec) -> SimpleNamespace:
    def funnelkvs_register_metrics_exporters() -> list[MetricsExporterSpec]:
        return list(specs)

    return plugin(funnelkvs_register_metrics_exporters=funnelkvs_register_metrics_exporters)


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a fake distribution (dist-info with ``funnelkvs`` entry points, plus its modules) on
    sys.path, so loading goes through the real ``importlib.metadata.entry_points``."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(dist: str, version: str, modules: dict[str, str]) -> dict[str, str]:
        # Module names are unique per test: sys.modules outlives the test otherwise.
        names = {ep: f"{ep}_{uuid.uuid4().hex[:8]}" for ep in modules}
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "[funnelkvs]\n" + "".join(f"{ep} = {module}\n" for ep, module in names.items())
        )
        for ep, source in modules.items():
            (site / f"{names[ep]}.py").write_text(textwrap.dedent(source))
            created.append(names[ep])
        return names

    yield make
    for name in created:
        sys.modules.pop(name, None)


GOOD_PLUGIN = """
    from funnelkvs import hookimpl
    from funnelkvs.contributions import MetricsExporterSpec

    @hookimpl
    def funnelkvs_register_metrics_exporters():
        return [MetricsExporterSpec("good-exporter", lambda options, source: None, "test exporter")]
"""


# --- registries -----------------------------------------------------------------------------------------


def test_registry_unknown_name_lists_the_choices() -> None:
    registry: Registry[StorageBackendSpec] = Registry("storage backend")
    for name in ("sqlite", "memory", "lmdb"):
        registry.add(backend_spec(name), plugin=f"plugin-{name}")
    assert registry.get("lmdb").name == "lmdb"
    assert registry.provider("sqlite") == "plugin-sqlite"
    assert "memory" in registry and len(registry) == 3
    with pytest.raises(PluginError) as info:
        registry.get("lmbd")
    assert str(info.value) == "unknown storage backend 'lmbd'; choose one of: lmdb, memory, sqlite"


def test_registry_rejects_a_name_claimed_twice_naming_both_plugins() -> None:
    registry: Registry[StorageBackendSpec] = Registry("storage backend")
    registry.add(backend_spec("fast"), plugin="first")
    with pytest.raises(
        PluginError, match="storage backend 'fast' is registered by both plugin 'first' and plugin 'second'"
    ):
        registry.add(backend_spec("fast"), plugin="second")


def test_two_plugins_registering_one_strategy_name_fail_the_load() -> None:
    def funnelkvs_register_replication_strategies() -> list[ReplicationStrategySpec]:
        return [ReplicationStrategySpec("successor-list", SuccessorListStrategy, "an impostor")]

    with pytest.raises(PluginError) as info:
        load(
            impostor=plugin(
                funnelkvs_register_replication_strategies=funnelkvs_register_replication_strategies
            )
        )
    assert "'funnelkvs.replication.strategy'" in str(info.value)
    assert "'impostor'" in str(info.value)


def test_builtins_are_registered_like_plugins() -> None:
    host = load()
    infos = {info.name: info for info in host.describe()}
    strategy = infos["funnelkvs.replication.strategy"]
    assert strategy.builtin and strategy.version == funnelkvs.__version__
    assert strategy.hooks == ("funnelkvs_register_replication_strategies",)
    assert strategy.contributions["replication_strategies"] == ["successor-list"]
    assert infos["funnelkvs.replication.resolver"].contributions["conflict_resolvers"] == ["last-writer-wins"]
    order = [info.name for info in host.describe()]
    assert order == [name for name in DEFAULT_PLUGINS if name in infos] + sorted(
        set(infos) - set(DEFAULT_PLUGINS)
    )
    replication = ReplicationSettings()
    assert isinstance(host.create_strategy(replication), SuccessorListStrategy)
    assert isinstance(host.create_resolver(replication), LastWriterWins)


def test_unknown_resolver_in_settings_lists_choices() -> None:
    with pytest.raises(
        PluginError, match=r"unknown conflict resolver 'lww'; choose one of: last-writer-wins$"
    ):
        load().create_resolver(ReplicationSettings(conflict_resolver="lww"))


# --- loading entry points -------------------------------------------------------------------------------


def test_entry_point_plugin_is_loaded_with_its_distribution_version(make_dist: Any) -> None:
    make_dist("funnelkvs-good", "1.2.3", {"good": GOOD_PLUGIN})
    host = load(PluginSettings(), env={"FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    info = {i.name: i for i in host.describe()}["good"]
    assert (info.version, info.distribution, info.builtin) == ("1.2.3", "funnelkvs-good", False)
    assert info.contributions["metrics_exporters"] == ["good-exporter"]
    assert host.metrics_exporters.provider("good-exporter") == "good"


def test_plugin_failing_to_import_is_reported_and_skipped(
    make_dist: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make_dist("funnelkvs-broken", "0.0.1", {"broken": "raise RuntimeError('boom at import')\n"})
    make_dist("funnelkvs-good", "1.0", {"good": GOOD_PLUGIN})
    with caplog.at_level(logging.WARNING, logger="funnelkvs.plugins"):
        host = load(PluginSettings(), env={"FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    [failure] = [f for f in host.failures if f.name == "broken"]
    assert failure.error == "RuntimeError: boom at import"
    assert failure.distribution == "funnelkvs-broken"
    assert "broken" not in {i.name for i in host.describe()}
    assert "good-exporter" in host.metrics_exporters
    assert any("'broken'" in r.getMessage() and "boom at import" in r.getMessage() for r in caplog.records)


def test_plugin_with_a_missing_dependency_is_reported(make_dist: Any) -> None:
    make_dist("funnelkvs-needy", "0.1", {"needy": "import funnelkvs_no_such_dependency\n"})
    host = load(PluginSettings(), env={"FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    [failure] = [f for f in host.failures if f.name == "needy"]
    assert "ModuleNotFoundError" in failure.error and "funnelkvs_no_such_dependency" in failure.error


def test_plugin_with_a_misspelled_hook_is_left_out_like_an_import_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[str] = []

    def funnelkvs_node_startd(node: Any) -> None:
        started.append("typo")

    def funnelkvs_node_started(node: Any) -> None:
        started.append("typo's other hook")

    typo = plugin(
        funnelkvs_node_startd=funnelkvs_node_startd,
        funnelkvs_node_started=funnelkvs_node_started,
        funnelkvs_register_storage_backends=lambda: [backend_spec("typo-store")],
    )
    with caplog.at_level(logging.WARNING, logger="funnelkvs.plugins"):
        host = load(typo=typo, fine=backends_plugin(backend_spec("fine-store")))
    [failure] = host.failures
    assert failure.name == "typo"
    assert failure.error == "unknown hook 'funnelkvs_node_startd' (did you mean 'funnelkvs_node_started'?)"
    assert any("'typo' skipped" in r.getMessage() for r in caplog.records)
    # Every hook of that plugin is gone, the others are all there.
    assert "typo" not in {i.name for i in host.describe()}
    assert "typo-store" not in host.storage_backends and "fine-store" in host.storage_backends
    assert {"memory", "lmdb", "sqlite"} <= set(host.storage_backends.names())
    host.node_started(SimpleNamespace())
    assert started == []
    host.pm.check_pending()  # nothing left that pluggy would refuse


def test_plugin_with_a_hook_argument_the_spec_lacks_is_left_out() -> None:
    stopped: list[str] = []

    def funnelkvs_node_started(node: Any) -> None:
        stopped.append("started")

    def funnelkvs_node_stopping(node: Any, reason: str) -> None:
        stopped.append(reason)

    # pluggy registers hooks in name order: "started" is in before "stopping" is refused.
    bad = plugin(
        funnelkvs_node_started=funnelkvs_node_started, funnelkvs_node_stopping=funnelkvs_node_stopping
    )
    host = load(**{"bad-args": bad})
    [failure] = host.failures
    assert failure.name == "bad-args"
    assert failure.error.startswith("hook 'funnelkvs_node_stopping' hookimpl definition:")
    assert "{'reason'}" in failure.error
    assert "bad-args" not in {i.name for i in host.describe()}
    host.node_started(SimpleNamespace())
    assert stopped == []


def test_plugin_whose_registration_raises_is_dropped_as_a_whole(caplog: pytest.LogCaptureFixture) -> None:
    started: list[str] = []

    def funnelkvs_register_conflict_resolvers() -> list[ConflictResolverSpec]:
        raise ValueError("registry offline")

    def funnelkvs_node_started(node: Any) -> None:
        started.append("flaky")

    flaky = plugin(
        funnelkvs_register_conflict_resolvers=funnelkvs_register_conflict_resolvers,
        funnelkvs_node_started=funnelkvs_node_started,
        funnelkvs_register_storage_backends=lambda: [backend_spec("flaky-store")],
    )
    host = load(flaky=flaky, fine=backends_plugin(backend_spec("fine-store")))
    [failure] = [f for f in host.failures if f.name == "flaky"]
    assert failure.error == "funnelkvs_register_conflict_resolvers: ValueError: registry offline"
    assert "flaky-store" not in host.storage_backends and "fine-store" in host.storage_backends
    host.node_started(SimpleNamespace())
    assert started == []


def test_registration_returning_the_wrong_type_is_a_failure() -> None:
    host = load(wrong=plugin(funnelkvs_register_storage_backends=lambda: ["memory"]))
    [failure] = [f for f in host.failures if f.name == "wrong"]
    assert "expected a list of StorageBackendSpec" in failure.error


# --- disabling and autoload -------------------------------------------------------------------------------


def test_disable_by_config() -> None:
    host = load(PluginSettings(autoload=False, disabled=["funnelkvs.replication.resolver"]))
    assert "funnelkvs.replication.resolver" not in {i.name for i in host.describe()}
    assert len(host.conflict_resolvers) == 0
    assert "successor-list" in host.replication_strategies
    with pytest.raises(PluginError, match=r"choose one of: \(none registered\)"):
        host.create_resolver(ReplicationSettings())


def test_disable_by_environment() -> None:
    host = load(env={"FUNNELKVS_DISABLE_PLUGINS": " nonexistent , funnelkvs.replication.strategy,"})
    assert len(host.replication_strategies) == 0
    assert "last-writer-wins" in host.conflict_resolvers
    assert host.disabled == {"nonexistent", "funnelkvs.replication.strategy"}


def test_disabled_entry_point_is_not_even_imported(make_dist: Any) -> None:
    make_dist("funnelkvs-broken", "0.0.1", {"broken": "raise RuntimeError('must not be imported')\n"})
    host = load(PluginSettings(disabled=["broken"]), env={"FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    assert all(f.name != "broken" for f in host.failures)


def test_disabled_programmatic_plugin_is_skipped() -> None:
    host = load(PluginSettings(autoload=False, disabled=["extra"]), extra=backends_plugin(backend_spec("x")))
    assert "x" not in host.storage_backends


@pytest.mark.parametrize(
    ("autoload", "env", "loaded"),
    [
        (False, {}, False),
        (True, {"FUNNELKVS_PLUGINS_AUTOLOAD": "0"}, False),
        (True, {"FUNNELKVS_PLUGINS_AUTOLOAD": "off"}, False),
        (False, {"FUNNELKVS_PLUGINS_AUTOLOAD": "1"}, True),
        (True, {}, True),
    ],
)
def test_autoload_switch(make_dist: Any, autoload: bool, env: dict[str, str], loaded: bool) -> None:
    make_dist("funnelkvs-good", "1.0", {"good": GOOD_PLUGIN})
    host = load(PluginSettings(autoload=autoload), env={**env, "FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    assert host.autoload is loaded
    assert ("good-exporter" in host.metrics_exporters) is loaded


def test_invalid_autoload_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="FUNNELKVS_PLUGINS_AUTOLOAD: 'maybe' is not a boolean"):
        load(env={"FUNNELKVS_PLUGINS_AUTOLOAD": "maybe"})


def test_plugin_names_that_name_no_plugin_are_refused() -> None:
    fine = backends_plugin(backend_spec("fine-store"))
    plugin_settings = PluginSettings(
        autoload=False, disabled=["funnelkvs.storage.sqlite_backend", "fien", "lmdb"], sections={"x": {}}
    )
    env = {"FUNNELKVS_DISABLE_PLUGINS": "fine,nothing-like-it"}
    host = load(plugin_settings, env, fine=fine)
    problems = problems_with_names(host, Settings(plugins=plugin_settings))
    assert problems[:2] == [
        "plugins.disabled[1]: no plugin is named 'fien' (did you mean 'fine'?)",
        "plugins.disabled[2]: 'lmdb' is not a plugin name but the storage backend of plugin "
        "'funnelkvs.storage.lmdb_backend'; name that plugin",
    ]
    [from_env] = problems[2:]  # sections are not checked: a disabled plugin may have read "x"
    assert from_env.startswith(
        "FUNNELKVS_DISABLE_PLUGINS: no plugin is named 'nothing-like-it' (known: fine, "
    )


def test_plugin_sections_that_nothing_reads_are_refused() -> None:
    fine = backends_plugin(backend_spec("fine-store"))
    sections: dict[str, dict[str, Any]] = {"fine": {}, "fine-store": {}, "fine-stroe": {}}
    # Every installed plugin must be loaded for the check; entry points of this environment too.
    plugin_settings = PluginSettings(sections=sections)
    host = load(plugin_settings, fine=fine)
    if host.installed - host.registered():
        pytest.skip(f"installed plugins that do not load here: {host.installed - host.registered()}")
    assert problems_with_names(host, Settings(plugins=plugin_settings)) == [
        "plugins.fine-stroe: no plugin or contribution is named 'fine-stroe' (did you mean 'fine-store'?)"
    ]


# --- storage backends -------------------------------------------------------------------------------------


def test_create_backend_passes_path_and_options(tmp_path: Path) -> None:
    seen: list[tuple[Any, Any]] = []

    def factory(path: Path | None, options: dict[str, Any]) -> MemoryBackend:
        seen.append((path, options))
        return MemoryBackend()

    host = load(disk=backends_plugin(backend_spec("disk", factory, persistent=True)))
    backend = host.create_backend(StorageSettings(backend="disk", path=tmp_path, options={"a": 1}))
    assert isinstance(backend, MemoryBackend)
    assert seen == [(tmp_path, {"a": 1})]
    with pytest.raises(ConfigError, match=r"storage\.path: required for the disk backend"):
        host.create_backend(StorageSettings(backend="disk"))
    with pytest.raises(PluginError, match=r"unknown storage backend 'dsik'; choose one of: .*disk"):
        host.create_backend(StorageSettings(backend="dsik"))


def test_create_backend_translates_and_checks_factory_results() -> None:
    def broken(path: Any, options: Any) -> Any:
        raise PermissionError("no access")

    def options_error(path: Any, options: Any) -> Any:
        raise ConfigError("storage.options.x: bad")

    host = load(
        odd=backends_plugin(
            backend_spec("broken", broken),
            backend_spec("not-a-backend", lambda p, o: {}),
            backend_spec("opts", options_error),
        )
    )
    with pytest.raises(
        StorageError, match="storage backend 'broken' failed to open: PermissionError: no access"
    ):
        host.create_backend(StorageSettings(backend="broken"))
    with pytest.raises(PluginError, match="returned dict, not a StorageBackend"):
        host.create_backend(StorageSettings(backend="not-a-backend"))
    with pytest.raises(ConfigError, match=r"storage\.options\.x: bad"):
        host.create_backend(StorageSettings(backend="opts"))


def test_a_backend_that_keeps_no_files_refuses_a_path(tmp_path: Path) -> None:
    host = load()
    with pytest.raises(ConfigError) as info:
        host.create_backend(StorageSettings(backend="memory", path=tmp_path / "data"))
    assert info.value.problems == [
        f"storage.path: '{tmp_path / 'data'}' is not used by the memory backend (it keeps no files); "
        "remove it, or choose a persistent backend"
    ]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
def test_backend_options_are_checked_without_opening_the_store(tmp_path: Path, backend: str) -> None:
    host = load()
    data = tmp_path / "data"
    bad = StorageSettings(backend=backend, path=data, options={"durabilty": "sync", "scan_batch": 0})
    problems = host.check_backend_options(bad)
    assert problems[0].startswith(f"storage.options.durabilty: unknown option for the {backend} backend")
    assert problems[1] == "storage.options.scan_batch: 0 is not a batch size (expected an integer >= 1)"
    assert host.check_backend_options(StorageSettings(backend=backend, path=data)) == []
    assert host.check_backend_options(StorageSettings(backend=backend)) == [
        f"storage.path: required for the {backend} backend"
    ]
    assert not data.exists()  # checked by the factory, which stopped before claiming the directory
    with pytest.raises(ConfigError) as info:  # the node runs the same checks when it opens the store
        host.create_backend(bad)
    assert info.value.problems == problems


def test_backend_options_check_of_a_factory_without_options_reader() -> None:
    opened: list[MemoryBackend] = []

    def own_checks(path: Any, options: dict[str, Any]) -> MemoryBackend:
        if options:
            raise ConfigError([f"storage.options.{name}: unknown" for name in options])
        opened.append(MemoryBackend())
        return opened[-1]

    def broken(path: Any, options: Any) -> Any:
        raise PermissionError("no access")

    host = load(own=backends_plugin(backend_spec("own", own_checks), backend_spec("broken", broken)))
    assert host.check_backend_options(StorageSettings(backend="own", options={"x": 1})) == [
        "storage.options.x: unknown"
    ]
    # Nothing stopped it before opening: it is closed again at once.
    assert host.check_backend_options(StorageSettings(backend="own")) == []
    assert opened[0]._closed
    assert host.check_backend_options(StorageSettings(backend="broken")) == [
        "storage.backend: 'broken' failed checking its options: PermissionError: no access"
    ]


# --- metrics exporters and lifecycle ------------------------------------------------------------------------


class RecordingExporter:
    def __init__(self, name: str, log: list[str], fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name, self.log, self.fail_start, self.fail_stop = name, log, fail_start, fail_stop

    def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            raise OSError("address in use")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError("stuck")


def fake_node(exporters: list[str], sections: dict[str, dict[str, Any]] | None = None) -> SimpleNamespace:
    settings = Settings()
    settings.metrics.exporters = exporters
    settings.plugins.sections = sections or {}
    return SimpleNamespace(settings=settings, metrics=NodeMetrics(), address="127.0.0.1:1", node_id="0" * 40)


def test_one_exporter_raising_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    options_seen: dict[str, Any] = {}

    def factory(name: str, **kwargs: Any) -> Any:
        def create(options: dict[str, Any], source: Any) -> RecordingExporter:
            options_seen[name] = options
            assert source.samples()
            return RecordingExporter(name, log, **kwargs)

        return create

    def exploding_factory(options: dict[str, Any], source: Any) -> Any:
        raise RuntimeError("factory bug")

    specs = [
        MetricsExporterSpec("first", factory("first", fail_stop=True), "x"),
        MetricsExporterSpec("refuses", factory("refuses", fail_start=True), "x"),
        MetricsExporterSpec("exploding", exploding_factory, "x"),
        MetricsExporterSpec("last", factory("last"), "x"),
    ]
    host = load(exp=exporters_plugin(*specs))
    node = fake_node(["first", "refuses", "exploding", "last"], {"last": {"interval": 5}})
    with caplog.at_level(logging.ERROR, logger="funnelkvs.plugins"):
        running = host.start_exporters(node)
    assert [item.name for item in running] == ["first", "last"]
    assert log == ["start first", "start refuses", "stop refuses", "start last"]
    assert options_seen["last"] == {"interval": 5} and options_seen["first"] == {}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'refuses' failed to start" in logged and "'exploding' could not be created" in logged
    log.clear()
    host.stop_exporters(running)
    assert log == ["stop last", "stop first"]


def test_exporter_config_errors_are_collected_before_anything_starts() -> None:
    log: list[str] = []

    def picky(name: str) -> Any:
        def create(options: dict[str, Any], source: Any) -> Any:
            if options:
                raise ConfigError([f"plugins.{name}.{key}: unknown option" for key in options])
            return RecordingExporter(name, log)

        return create

    host = load(
        exp=exporters_plugin(
            MetricsExporterSpec("a", picky("a"), "x"), MetricsExporterSpec("b", picky("b"), "x")
        )
    )
    with pytest.raises(ConfigError) as info:
        host.start_exporters(fake_node(["a", "b"], {"a": {"x": 1}, "b": {"y": 2}}))
    assert info.value.problems == ["plugins.a.x: unknown option", "plugins.b.y: unknown option"]
    assert log == []
    with pytest.raises(PluginError, match="unknown metrics exporter 'c'; choose one of: a, b"):
        host.start_exporters(fake_node(["a", "c"]))
    assert log == []


def test_lifecycle_hooks_all_run_despite_one_raising(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def lifecycle(name: str, fail: bool = False) -> SimpleNamespace:
        def funnelkvs_node_started(node: Any) -> None:
            calls.append(f"started {name} {node.address}")
            if fail:
                raise RuntimeError(f"{name} is broken")

        def funnelkvs_node_stopping(node: Any) -> None:
            calls.append(f"stopping {name}")
            if fail:
                raise RuntimeError(f"{name} is broken")

        return plugin(
            funnelkvs_node_started=funnelkvs_node_started, funnelkvs_node_stopping=funnelkvs_node_stopping
        )

    host = load(one=lifecycle("one"), two=lifecycle("two", fail=True), three=lifecycle("three"))
    node = fake_node([])
    with caplog.at_level(logging.ERROR, logger="funnelkvs.plugins"):
        host.node_started(node)
        host.node_stopping(node)
    addr = node.address
    # pluggy's order (last registered first), and the reverse for stopping: a stack.
    assert calls == [
        f"started three {addr}", f"started two {addr}", f"started one {addr}",
        "stopping one", "stopping two", "stopping three",
    ]  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert "plugin 'two' raised in funnelkvs_node_started; ignored" in messages
    assert "plugin 'two' raised in funnelkvs_node_stopping; ignored" in messages


# --- default replication plugins --------------------------------------------------------------------------


def ring(*ids: int, address: str | None = None) -> RingView:
    return RingView.of(NodeRef(i, address or f"10.0.0.{n}:8001") for n, i in enumerate(ids))


def test_ring_view_sorts_dedupes_and_rejects_unsorted() -> None:
    view = RingView.of([NodeRef(30, "c"), NodeRef(10, "a"), NodeRef(20, "b"), NodeRef(10, "a-again")])
    assert [n.address for n in view.nodes] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="sorted"):
        RingView((NodeRef(20, "b"), NodeRef(10, "a")))
    with pytest.raises(ValueError):
        RingView((NodeRef(RING_SIZE, "x"),))


def test_successor_is_the_first_node_at_or_after_the_position_wrapping_past_zero() -> None:
    view = ring(100, 200, 300)
    assert view.successor(150) == view.nodes[1]
    assert view.successor(200) == view.nodes[1]  # a node owns its own id: (predecessor, self]
    assert view.successor(301) == view.nodes[0]
    assert view.successor(RING_SIZE - 1) == view.nodes[0]
    assert RingView(()).successor(5) is None


def test_successor_list_preference_list() -> None:
    view = ring(100, 200, 300, 400)
    strategy = SuccessorListStrategy()
    assert strategy.preference_list(150, view, 1) == [view.nodes[1]]
    assert [n.node_id for n in strategy.preference_list(350, view, 3)] == [400, 100, 200]
    assert [n.node_id for n in strategy.preference_list(350, view, 10)] == [400, 100, 200, 300]
    assert strategy.preference_list(5, RingView(()), 3) == []
    with pytest.raises(ValueError):
        strategy.preference_list(5, view, 0)


def test_successor_list_skips_a_second_node_on_the_same_address() -> None:
    view = RingView.of([NodeRef(100, "a:1"), NodeRef(200, "a:1"), NodeRef(300, "b:1")])
    assert [n.node_id for n in SuccessorListStrategy().preference_list(50, view, 2)] == [100, 300]


def test_last_writer_wins_is_deterministic_and_order_independent() -> None:
    old = Versioned(b"old", Version(100, 1))
    new = Versioned(b"new", Version(200, 1))
    tie_b = Versioned(b"from-b", Version(200, 2))
    tombstone = Versioned(None, Version(300, 1))
    lww = LastWriterWins()
    assert lww.resolve(b"k", []) == []
    assert lww.resolve(b"k", [old, new]) == [new]
    assert lww.resolve(b"k", [new, tie_b]) == [tie_b]
    assert lww.resolve(b"k", [old, tombstone, new]) == [tombstone] and tombstone.is_tombstone
    same_stamp = [
        Versioned(b"x", Version(5, 1)),
        Versioned(b"y", Version(5, 1)),
        Versioned(None, Version(5, 1)),
    ]
    for candidates in (same_stamp, [old, new, tie_b, tombstone]):
        answers = {tuple(lww.resolve(b"k", list(p))) for p in itertools.permutations(candidates)}
        assert len(answers) == 1
    assert lww.resolve(b"k", same_stamp) == [same_stamp[1]]


# --- funnelkvs plugins --------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELKVS_")}
    return subprocess.run(
        [*funnelkvs_command(), "plugins", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
    )


def test_cli_plugins_json_lists_backends_and_the_prometheus_package() -> None:
    result = run_cli("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    backends = {name for p in report["plugins"] for name in p["contributions"]["storage_backends"]}
    assert {"memory", "lmdb", "sqlite"} <= backends
    prometheus = plugins["prometheus"]
    assert prometheus["distribution"] == "funnelkvs-prometheus" and prometheus["builtin"] is False
    assert prometheus["contributions"]["metrics_exporters"] == ["prometheus"]
    assert prometheus["hooks"] == ["funnelkvs_register_metrics_exporters"]
    assert report["failures"] == [] and report["autoload"] is True


def test_cli_plugins_table_and_disable_through_environment() -> None:
    table = run_cli()
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("NAME")
    assert "metrics exporter: prometheus" in table.stdout
    disabled = run_cli("--json", env={"FUNNELKVS_DISABLE_PLUGINS": "prometheus"})
    report = json.loads(disabled.stdout)
    assert "prometheus" not in {p["name"] for p in report["plugins"]}
    assert report["disabled"] == ["prometheus"]


def test_cli_plugins_with_config(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("plugins:\n  autoload: false\n")
    report = json.loads(run_cli("--json", "--config", str(config)).stdout)
    assert report["autoload"] is False
    assert "prometheus" not in {p["name"] for p in report["plugins"]}
    config.write_text("plugins:\n  autolaod: false\n")
    bad = run_cli("--config", str(config))
    assert bad.returncode == 2
    assert "plugins.autolaod" in bad.stderr and "Traceback" not in bad.stderr


TYPO_PLUGIN = """
    from funnelkvs import hookimpl

    @hookimpl
    def funnelkvs_node_startd(node):
        pass
"""


def test_cli_plugins_lists_everything_and_a_misspelled_hook_among_the_failures(
    make_dist: Any, tmp_path: Path
) -> None:
    make_dist("funnelkvs-typo", "0.2", {"typo": TYPO_PLUGIN, "good": GOOD_PLUGIN})
    env = {"PYTHONPATH": str(tmp_path / "site")}
    result = run_cli("--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failures"] == [
        {
            "name": "typo",
            "error": "unknown hook 'funnelkvs_node_startd' (did you mean 'funnelkvs_node_started'?)",
            "distribution": "funnelkvs-typo",
        }
    ]
    listed = {p["name"] for p in report["plugins"]}
    assert {"good", *DEFAULT_PLUGINS} <= listed and "typo" not in listed
    table = run_cli(env=env)
    assert table.returncode == 0, table.stderr
    assert "failed to load (the node starts without them):\n  typo: unknown hook 'funnelkvs_node_startd'" in (
        table.stdout
    )
    assert table.stderr == ""  # the failure is in the report, not repeated as a log line


def test_node_starts_without_a_plugin_whose_hook_is_misspelled(make_dist: Any, tmp_path: Path) -> None:
    make_dist("funnelkvs-typo", "0.2", {"typo": TYPO_PLUGIN})
    env = {"PYTHONPATH": str(tmp_path / "site"), "FUNNELKVS_PLUGINS_AUTOLOAD": "1"}
    with NodeProcess.start(tmp_path / "node", env=env) as node:
        log = node.log()
    assert "plugin 'typo' skipped: unknown hook 'funnelkvs_node_startd'" in log
    assert "command line" not in log and "Traceback" not in log
