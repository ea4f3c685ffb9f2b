"""Configuration: YAML loading, the strict schema, overrides, ${VAR} substitution, the example file,
and ``funnelkvs config check/show`` through real subprocesses."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from funnelkvs.config import (
    SCHEMA,
    load_settings,
    parse_size,
    read_config,
    settings_from_mapping,
    settings_to_mapping,
)
from funnelkvs.errors import ConfigError
from funnelkvs.settings import Settings
from funnelkvs.storage.datadir import claim

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


def write(tmp_path: Path, text: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, **kwargs: Any) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, **kwargs)
    return [problem.replace(str(path), "F") for problem in info.value.problems]


def mapping_problems(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, "cfg", **kwargs)
    return info.value.problems


# --- defaults and the example file --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "node:\nstorage:\n"])
def test_empty_file_or_sections_mean_defaults(tmp_path: Path, text: str) -> None:
    assert load_settings(write(tmp_path, text), env={}) == Settings()


def test_no_file_means_defaults() -> None:
    assert load_settings(None, env={}) == Settings()


def test_schema_covers_every_settings_field() -> None:
    settings_sections = {f.name for f in dataclasses.fields(Settings)}
    assert set(SCHEMA) == settings_sections
    for name, section in SCHEMA.items():
        fields = {f.name for f in dataclasses.fields(section.settings_type)}
        fields.discard("sections")  # plugins.<name>: any other key under plugins
        assert set(section.fields) == fields, name


def test_example_file_validates_and_equals_the_defaults() -> None:
    assert load_settings(EXAMPLE, env={}) == Settings()


def test_example_file_spells_out_every_option_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    data = yaml.safe_load(text)
    lines = text.splitlines()
    defaults = Settings()
    for section in dataclasses.fields(Settings):
        assert isinstance(data.get(section.name), dict), f"section {section.name} missing"
        for item in dataclasses.fields(getattr(defaults, section.name)):
            if item.name == "sections":  # plugins.<name>: shown commented out
                continue
            assert item.name in data[section.name], f"{section.name}.{item.name} missing"
            [index] = [i for i, line in enumerate(lines) if line.startswith(f"  {item.name}:")]
            assert lines[index - 1].lstrip().startswith("#"), f"{section.name}.{item.name} has no comment"


def test_example_file_is_runnable_as_is() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.node.address == "127.0.0.1:8001"
    assert settings.storage.backend == "memory"
    assert settings.metrics.exporters == []


def test_settings_round_trip_through_a_mapping() -> None:
    settings = settings_from_mapping(
        {
            "node": {
                "host": "10.0.0.1",
                "port": 9000,
                "join": ["10.0.0.2:9000"],
                "advertise": "a.example:9000",
            },
            "storage": {"backend": "lmdb", "path": "/data", "options": {"durable": False}},
            "replication": {"factor": 3, "write_quorum": 2, "read_quorum": 2},
            "limits": {"max_key_size": "1KiB"},
            "plugins": {"disabled": ["x"], "prometheus": {"port": 9200}},
        }
    )
    data = settings_to_mapping(settings)
    assert data["plugins"]["prometheus"] == {"port": 9200}
    assert data["storage"]["path"] == "/data"
    json.dumps(data)  # plain data only
    assert settings_from_mapping(data) == settings


# --- error kinds ----------------------------------------------------------------------------------------


def test_out_of_range_port(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "node:\n  port: 70000\n") == [
        "F:2: node.port: 70000 is not a valid port (0-65535)"
    ]


def test_port_ranges_name_what_each_key_accepts() -> None:
    # A node may listen on port 0 (the kernel picks one); nobody can connect to port 0.
    assert settings_from_mapping({"node": {"port": 0}}).node.port == 0
    assert mapping_problems({"node": {"port": -1, "advertise": "10.0.0.1:0", "join": ["10.0.0.2:0"]}}) == [
        "cfg: node.port: -1 is not a valid port (0-65535)",
        "cfg: node.advertise: '10.0.0.1:0' is not a valid address (host:port, port 1-65535)",
        "cfg: node.join[0]: '10.0.0.2:0' is not a valid address (host:port, port 1-65535)",
    ]


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "node:\n  prot: 9000\n") == [
        "F:2: node.prot: unknown key (did you mean 'port'?)"
    ]
    assert problems_of(tmp_path, "nod:\n  port: 9000\n") == ["F:1: nod: unknown key (did you mean 'node'?)"]


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    assert mapping_problems({"logging": {"zzz": 1}}) == [
        "cfg: logging.zzz: unknown key (expected one of: level)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node:\n  port: true\n", "node.port: true is not a valid port"),
        ("node:\n  port: '8001'\n", "node.port: '8001' is not a valid port"),
        ("node:\n  port: 8001.0\n", "node.port: 8001.0 is not a valid port"),
        ("replication:\n  factor: yes\n", "replication.factor: true is not a positive integer"),
        ("replication:\n  factor: 0\n", "replication.factor: 0 is not a positive integer"),
        ("plugins:\n  autoload: 'yes'\n", "plugins.autoload: 'yes' is not a boolean (true or false)"),
        ("plugins:\n  autoload: 1\n", "plugins.autoload: 1 is not a boolean (true or false)"),
        ("node: 8001\n", "node: 8001 is an integer, not a mapping (keys: host, port, advertise, join, id)"),
        ("storage:\n  options: [1]\n", "storage.options: [1] is a list, not a mapping"),
        ("storage:\n  path: 5\n", "storage.path: 5 is not a valid path (a non-empty string)"),
        ("storage:\n  backend: ''\n", "storage.backend: '' is not a valid storage backend name"),
        ("logging:\n  level: verbose\n", "logging.level: 'verbose' is not a log level (one of DEBUG,"),
        ("node:\n  host: 'two words'\n", "node.host: 'two words' is not a valid host (a hostname or IP"),
        ("metrics:\n  exporters: prometheus\n", "metrics.exporters: 'prometheus' is not a list of exporter"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith("F:") and expected in problem, problem


def test_list_of_one_string_hints_at_the_list_syntax() -> None:
    [problem] = mapping_problems({"node": {"join": "127.0.0.1:9001"}})
    assert problem == (
        "cfg: node.join: '127.0.0.1:9001' is not a list of addresses (host:port) (write ['127.0.0.1:9001'])"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        ":8001",
        "::1:8001",
        "[::1]8001",
        "[10.0.0.1]:80",
        "a b:1",
        "999.0.0.1:80",
        8001,
    ],
)
def test_bad_join_address(bad: Any) -> None:
    [problem] = mapping_problems({"node": {"join": ["127.0.0.1:9001", bad]}})
    assert problem.startswith("cfg: node.join[1]: ")
    assert problem.endswith("is not a valid address (host:port, port 1-65535)")


def test_good_addresses() -> None:
    join = ["127.0.0.1:9001", "[::1]:9002", "db-1.example.org:8001", "localhost:1"]
    settings = settings_from_mapping({"node": {"join": join, "advertise": "10.1.2.3:8001", "host": "::1"}})
    assert settings.node.join == join
    assert settings.node.address == "10.1.2.3:8001"


def test_listening_on_every_interface_needs_an_advertised_address() -> None:
    [problem] = mapping_problems({"node": {"host": "0.0.0.0"}})
    assert problem.startswith("cfg: node.advertise: null is not valid when node.host is '0.0.0.0'")
    [problem] = mapping_problems({"node": {"advertise": "0.0.0.0:8001"}})
    assert problem.startswith(
        "cfg: node.advertise: '0.0.0.0:8001' is not an address other nodes can connect to"
    )
    settings = settings_from_mapping({"node": {"host": "0.0.0.0", "advertise": "10.0.0.1:8001"}})
    assert settings.node.address == "10.0.0.1:8001"


def test_quorum_larger_than_factor(tmp_path: Path) -> None:
    text = "replication:\n  factor: 2\n  write_quorum: 3\n  read_quorum: 2\n"
    assert problems_of(tmp_path, text) == [
        "F:3: replication.write_quorum: 3 is not a valid quorum (1-2: at most replication.factor)"
    ]
    # A default quorum of 1 is always valid; an invalid factor is reported alone.
    assert mapping_problems({"replication": {"factor": 0, "read_quorum": 2}}) == [
        "cfg: replication.factor: 0 is not a positive integer"
    ]
    settings = settings_from_mapping({"replication": {"factor": 3, "write_quorum": 3, "read_quorum": 1}})
    assert settings.replication.write_quorum == 3


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path: Path) -> None:
    text = "node:\n  port: 9000\n  host: 127.0.0.1\n  port: 9001\n"
    assert problems_of(tmp_path, text) == ["F:4: node.port: duplicate key (first given on line 2)"]
    text = "limits: {}\nnode: {}\nlimits:\n  max_connections: 5\n"
    assert problems_of(tmp_path, text) == ["F:3: limits: duplicate key (first given on line 1)"]


def test_duplicate_keys_inside_plugin_sections_too(tmp_path: Path) -> None:
    text = "plugins:\n  prometheus:\n    port: 1\n    port: 2\n"
    assert problems_of(tmp_path, text) == [
        "F:4: plugins.prometheus.port: duplicate key (first given on line 3)"
    ]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("node:\n  port: [8001\n", "F:3:1:", "expected ',' or ']'"),
        ("node:\n\tport: 8001\n", "F:2:1:", "found character '\\t' that cannot start any token"),
        ("node: port: 1\n", "F:1:11:", "mapping values are not allowed here"),
        ("node: {}\n---\nnode: {}\n", "F:2:1:", "expected a single document"),
    ],
)
def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, where: str, what: str) -> None:
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith(f"{where} invalid YAML: ")
    assert what in problem
    assert "\n" not in problem


def test_unsafe_tags_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"node: !!python/object/apply:os.system ['touch {marker}']\n"
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith("F:1:7: invalid YAML: could not determine a constructor")
    assert not marker.exists()


def test_alias_bomb_is_cheap(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    started = time.monotonic()
    problems = problems_of(tmp_path, "\n".join(lines) + "\n")
    assert time.monotonic() - started < 5
    assert len(problems) == 9 and all("unknown key" in p for p in problems)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "- node\n") == [
        "F: ['node'] is a list, not a mapping of sections node, ring, storage, replication, limits, logging, "
        "metrics, plugins"
    ]


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "node:\n"
        "  prot: 9000\n"
        "  port: 70000\n"
        "  join: ['127.0.0.1:9001', 'nohost']\n"
        "replication:\n"
        "  factor: 2\n"
        "  read_quorum: 5\n"
        "limits:\n"
        "  max_value_size: lots\n"
        "loging:\n"
        "  level: INFO\n"
    )
    assert problems_of(tmp_path, text) == [
        "F:2: node.prot: unknown key (did you mean 'port'?)",
        "F:3: node.port: 70000 is not a valid port (0-65535)",
        "F:4: node.join[1]: 'nohost' is not a valid address (host:port, port 1-65535)",
        "F:7: replication.read_quorum: 5 is not a valid quorum (1-2: at most replication.factor)",
        "F:9: limits.max_value_size: 'lots' is not a valid size "
        "(a number of bytes, or a string like '64KiB')",
        "F:10: loging: unknown key (did you mean 'logging'?)",
    ]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'nope.yaml'}: cannot read config file: No such file or directory"
    ]
    with pytest.raises(ConfigError, match="cannot read config file: Is a directory"):
        load_settings(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"node:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(tmp_path / "latin1.yaml")


# --- values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (65536, 65536),
        ("65536", 65536),
        ("64KiB", 65536),
        ("16 MiB", 16 * 1024 * 1024),
        ("1.5KiB", 1536),
        ("2kb", 2000),
        ("1GB", 10**9),
        ("10B", 10),
    ],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size
    assert settings_from_mapping({"limits": {"max_output_buffer": text}}).limits.max_output_buffer == size


@pytest.mark.parametrize("bad", ["1.3B", "10XB", "KiB", "-1", True, 1.5, None])
def test_bad_sizes(bad: Any) -> None:
    [problem] = mapping_problems({"limits": {"max_key_size": bad}})
    assert "is not a valid size" in problem


def test_sizes_are_bounded_by_the_wire_format() -> None:
    [problem] = mapping_problems({"limits": {"max_value_size": "4GiB", "max_key_size": "4GB"}})
    assert problem == "cfg: limits.max_value_size: '4GiB' is not a valid size (1-4294967295 bytes)"
    [problem] = mapping_problems({"limits": {"max_connections": 5, "max_key_size": 0}})
    assert problem == "cfg: limits.max_key_size: 0 is not a valid size (1-4294967295 bytes)"


def test_log_level_is_case_insensitive() -> None:
    assert settings_from_mapping({"logging": {"level": "debug"}}).logging.level == "DEBUG"


def test_storage_path_and_options() -> None:
    settings = settings_from_mapping(
        {"storage": {"backend": "lmdb", "path": "/var/lib/kv", "options": {"x": [1]}}}
    )
    assert settings.storage.path == Path("/var/lib/kv")
    assert settings.storage.options == {"x": [1]}
    assert mapping_problems({"storage": {"options": {1: "a"}}}) == [
        "cfg: storage.options.1: 1 is not a valid key (a string)"
    ]


def claimed(path: Path, backend: str) -> Path:
    claim(path, backend, 1).release()
    return path


def test_without_a_backend_a_data_directory_opens_with_the_backend_that_wrote_it(tmp_path: Path) -> None:
    data = claimed(tmp_path / "data", "sqlite")
    settings = settings_from_mapping({"storage": {"path": str(data)}})
    assert (settings.storage.backend, settings.storage.path) == ("sqlite", data)
    assert load_settings(None, {"storage.path": str(data)}, env={}).storage.backend == "sqlite"
    # A backend given explicitly is kept: opening the directory then refuses the mismatch.
    overrides = {"storage.path": str(data), "storage.backend": "lmdb"}
    assert load_settings(None, overrides, env={}).storage.backend == "lmdb"
    assert settings_from_mapping({}).storage.backend == "memory"  # no directory, no backend: memory


def test_without_a_backend_a_directory_without_a_marker_is_refused(tmp_path: Path) -> None:
    hint = "name the backend with storage.backend (--backend), e.g. lmdb or sqlite"
    missing = tmp_path / "new"
    assert mapping_problems({"storage": {"path": str(missing)}}) == [
        f"cfg: storage.path: data directory {missing} does not exist, so no marker says which backend "
        f"wrote it; {hint}"
    ]
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"storage.path": str(tmp_path)}, env={})
    assert info.value.problems == [
        f"command line: storage.path: data directory {tmp_path} has no FUNNELKVS_FORMAT marker saying "
        f"which backend wrote it; {hint}"
    ]
    a_file = write(tmp_path, "", name="a-file")
    [problem] = problems_of(tmp_path, f"logging:\n  level: info\nstorage:\n  path: {a_file}\n")
    assert problem.startswith(f"F:4: storage.path: data directory {a_file} is not a directory, ")
    assert not missing.exists()


def test_quorums_default_to_two_or_the_factor() -> None:
    assert (Settings().replication.w, Settings().replication.r) == (2, 2)
    one = settings_from_mapping({"replication": {"factor": 1}}).replication
    assert (one.factor, one.w, one.r) == (1, 1, 1)
    five = settings_from_mapping({"replication": {"factor": 5, "write_quorum": 4}}).replication
    assert (five.w, five.r) == (4, 2)


def test_plugin_sections() -> None:
    settings = settings_from_mapping(
        {
            "plugins": {
                "disabled": ["funnelkvs.storage.lmdb_backend"],
                "prometheus": {"port": 9200},
                "empty": None,
            }
        }
    )
    assert settings.plugins.sections == {"prometheus": {"port": 9200}, "empty": {}}
    assert settings.plugins.disabled == ["funnelkvs.storage.lmdb_backend"]
    assert mapping_problems({"plugins": {"disable": ["x"]}}) == [
        "cfg: plugins.disable: unknown key (did you mean 'disabled'?)"
    ]
    assert mapping_problems({"plugins": {"prometheus": 9108}}) == [
        "cfg: plugins.prometheus: 9108 is an integer, not a mapping "
        "(plugins.<name> sections hold a plugin's settings)"
    ]


def test_exporter_listed_twice() -> None:
    assert mapping_problems({"metrics": {"exporters": ["prometheus", "prometheus"]}}) == [
        "cfg: metrics.exporters[1]: 'prometheus' is listed twice"
    ]


# --- overrides ------------------------------------------------------------------------------------------


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 8005\n  join: ['127.0.0.1:9005']\nstorage:\n  backend: memory\n")
    overrides = {
        "node.port": 9000,
        "node.join": ["127.0.0.1:9001"],
        "storage.backend": "lmdb",
        "storage.path": "/x",
        "node.host": None,  # an unset flag changes nothing
    }
    settings = load_settings(path, overrides, env={})
    assert settings.node.port == 9000
    assert settings.node.host == "127.0.0.1"
    assert settings.node.join == ["127.0.0.1:9001"]
    assert settings.storage.backend == "lmdb"
    assert settings.storage.path == Path("/x")


def test_overrides_without_a_file() -> None:
    settings = load_settings(None, {"node.port": 0, "plugins.prometheus.port": 0}, env={})
    assert settings.node.port == 0
    assert settings.plugins.sections == {"prometheus": {"port": 0}}


def test_overrides_are_validated_and_blamed_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 8001\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {"node.port": 70000, "node.join": ["a:1", "b"], "node.hots": "x"}, env={})
    assert info.value.problems == [
        f"{path}:3: node.prot: unknown key (did you mean 'port'?)",
        "command line: node.port: 70000 is not a valid port (0-65535)",
        "command line: node.join[1]: 'b' is not a valid address (host:port, port 1-65535)",
        "command line: node.hots: unknown key (did you mean 'host'?)",
    ]


def test_overrides_do_not_modify_the_given_mapping() -> None:
    data: dict[str, Any] = {"node": {"port": 8001}}
    settings = settings_from_mapping(data, overrides={"node.port": 9000})
    assert settings.node.port == 9000
    assert data == {"node": {"port": 8001}}


# --- environment substitution ---------------------------------------------------------------------------


def test_environment_substitution(tmp_path: Path) -> None:
    text = (
        "node:\n"
        "  host: ${HOST}\n"
        "  port: ${PORT:-8001}\n"
        "  join: ['${SEED}:9001']\n"
        "storage:\n"
        "  backend: lmdb\n"
        "  path: ${DATA:-/var/lib/funnelkvs}/node1\n"
        "plugins:\n"
        "  vault:\n"
        "    token: ${TOKEN}\n"
        "    literal: '$${NOT_A_REFERENCE}'\n"
        "    quoted_number: '${PORT:-8001}'\n"
    )
    path = write(tmp_path, text)
    env = {"HOST": "10.0.0.7", "SEED": "10.0.0.8", "TOKEN": "s3cret", "DATA": ""}
    loaded = read_config(path, env=env)
    settings = loaded.settings
    assert settings.node.host == "10.0.0.7"
    assert settings.node.port == 8001  # an unquoted reference is typed like any YAML scalar
    assert settings.node.join == ["10.0.0.8:9001"]
    assert settings.storage.path == Path("/var/lib/funnelkvs/node1")  # empty counts as unset for :-
    assert settings.plugins.sections["vault"] == {
        "token": "s3cret",
        "literal": "${NOT_A_REFERENCE}",
        "quoted_number": "8001",
    }
    assert loaded.from_environment[("plugins", "vault", "token")] == "${TOKEN}"
    assert load_settings(path, env={**env, "PORT": "9009"}).node.port == 9009


def test_unset_variable_names_the_path_and_the_variable(tmp_path: Path) -> None:
    text = "node:\n  port: 8001\nplugins:\n  vault:\n    token: ${VAULT_TOKEN}\n    url: ${VAULT_URL}\n"
    assert problems_of(tmp_path, text, env={"VAULT_URL": "https://vault"}) == [
        "F:5: plugins.vault.token: environment variable VAULT_TOKEN is not set "
        "(set it, or give a default: ${VAULT_TOKEN:-default})"
    ]


def test_malformed_reference(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "storage:\n  backend: ${1BAD}\n", env={})
    assert problem.startswith("F:2: storage.backend: '${1BAD}' is not a valid reference")


def test_substituted_value_is_still_validated(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "node:\n  port: ${PORT}\n", env={"PORT": "http"})
    assert problem == "F:2: node.port: 'http' is not a valid port (0-65535)"


# --- the command line -----------------------------------------------------------------------------------


def funnelkvs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("funnelkvs")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "funnelkvs.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_cli_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 8002\n")
    result = funnelkvs("config", "check", "--no-plugins", str(EXAMPLE), str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{EXAMPLE}: ok", f"{path}: ok"]


def test_cli_check_reports_every_problem_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node:\n  port: 70000\n  prot: 1\n  port: 2\n"
        "replication:\n  write_quorum: 4\n"
        "secret: ${NO_SUCH_VAR_XYZ}\n",
    )
    result = funnelkvs("config", "check", "--no-plugins", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        f"{path}:3: node.prot: unknown key (did you mean 'port'?)",
        f"{path}:4: node.port: duplicate key (first given on line 2)",
        f"{path}:6: replication.write_quorum: 4 is not a valid quorum (1-3: at most replication.factor)",
        f"{path}:7: secret: environment variable NO_SUCH_VAR_XYZ is not set "
        "(set it, or give a default: ${NO_SUCH_VAR_XYZ:-default})",
        f"{path}:7: secret: unknown key (expected one of: limits, logging, metrics, node, plugins, "
        "replication, ring, storage)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "cannot read config file: No such file or directory"),
        ("node: [\n", ":2:1: invalid YAML: "),
    ],
)
def test_cli_check_unreadable_files(tmp_path: Path, text: str | None, expected: str) -> None:
    path = tmp_path / "node.yaml"
    if text is not None:
        path.write_text(text)
    result = funnelkvs("config", "check", str(path))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(str(path)) and expected in line
    assert "Traceback" not in result.stderr


def test_cli_check_uses_the_plugin_registries(tmp_path: Path) -> None:
    pytest.importorskip("funnelkvs.plugins")
    path = write(tmp_path, "storage:\n  backend: lmbd\n")
    result = funnelkvs("config", "check", str(path))
    assert result.returncode == 2
    assert f"{path}: storage.backend: unknown storage backend 'lmbd'; choose one of: " in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_runs_the_backend_option_checks_the_node_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = write(tmp_path, f"storage:\n  backend: lmdb\n  path: {data}\n  options: {{durabilty: nosync}}\n")
    memory = write(tmp_path, f"storage:\n  backend: memory\n  path: {data}\n", name="memory.yaml")
    good = write(tmp_path, f"storage:\n  backend: sqlite\n  path: {data}\n", name="good.yaml")
    result = funnelkvs("config", "check", str(bad), str(memory), str(good))
    assert result.returncode == 2
    assert result.stdout == f"{good}: ok\n"
    assert result.stderr.splitlines() == [
        f"{bad}: storage.options.durabilty: unknown option for the lmdb backend "
        "(expected one of: durability, map_size, read_only, scan_batch)",
        f"{memory}: storage.path: '{data}' is not used by the memory backend (it keeps no files); "
        "remove it, or choose a persistent backend",
    ]
    assert not data.exists()  # checked, never opened
    assert funnelkvs("config", "check", "--no-plugins", str(bad), str(memory)).returncode == 0


def test_cli_check_refuses_a_disabled_name_that_is_no_plugin(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins:\n  disabled: [funnelkvs.storage.lmbd_backend]\n")
    result = funnelkvs("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"{path}: plugins.disabled[0]: no plugin is named 'funnelkvs.storage.lmbd_backend' "
        "(did you mean 'funnelkvs.storage.lmdb_backend'?)\n"
    )


def test_cli_check_example_file_with_plugins() -> None:
    pytest.importorskip("funnelkvs.plugins")
    result = funnelkvs("config", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{EXAMPLE}: ok\n"


def test_cli_show_masks_environment_values(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 8009\nplugins:\n  vault:\n    token: ${FUNNELKVS_TEST_TOKEN}\n")
    env = {"PATH": "/usr/bin:/bin", "FUNNELKVS_TEST_TOKEN": "s3cret"}
    result = funnelkvs("config", "show", "--json", str(path), env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["node"]["port"] == 8009
    assert data["plugins"]["vault"] == {"token": "${FUNNELKVS_TEST_TOKEN}"}
    assert data["limits"]["max_value_size"] == 16 * 1024 * 1024
    revealed = funnelkvs("config", "show", "--show-secrets", str(path), env=env)
    assert yaml.safe_load(revealed.stdout)["plugins"]["vault"] == {"token": "s3cret"}


def test_docs_describe_every_key() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, section in SCHEMA.items():
        for key in section.fields:
            assert f"| `{name}.{key}` |" in text, f"{name}.{key} is not in docs/configuration.md"
    assert "| `plugins.<name>` |" in text


def test_without_a_file_problems_are_blamed_on_the_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"node.host": "0.0.0.0", "node..port": 1}, env={})
    assert info.value.problems == [
        "command line: node..port: is not a dotted key path (like node.port)",
        "command line: node.advertise: null is not valid when node.host is '0.0.0.0', which other nodes "
        "cannot connect to (set node.advertise to the host:port this node is reached at)",
    ]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "plugins:\n  a: &common\n    x: 1\n    s: ${S}\n  b:\n    <<: *common\n    x: 2\n"
    settings = load_settings(write(tmp_path, text), env={"S": "v"})
    assert settings.plugins.sections == {"a": {"x": 1, "s": "v"}, "b": {"x": 2, "s": "v"}}


def test_file_problems_under_an_overridden_key(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 1\n  port: 2\n  host: ${UNSET_HOST}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {"node.port": 70000, "node.host": "127.0.0.1"}, env={})
    # The duplicate is still the file's mistake; the unset variable is moot once --host replaces it.
    assert info.value.problems == [
        f"{path}:3: node.port: duplicate key (first given on line 2)",
        "command line: node.port: 70000 is not a valid port (0-65535)",
    ]
