"""Lasting proxies in config.yaml: loading, validation errors with file, line and key,
and ``add_proxy``/``remove_proxy`` edits that keep every other byte and comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerup.config import load
from peerup.config.schema import NodeConfig, ProxyConfig
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([n]) * 32).public_key
    )


A, B = peer(1), peer(2)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


USER_FILE = f"""\
# my node
version: 1
identity_key: identity.key

names:
  home: {A}

# Ports I always want open
proxies:
  # ssh to the home box
  - peer: home
    service: ssh   # sshd there
    port: 2222

  # the NAS, by peer ID
  - peer: {B}
    service: nas
    port: 4450
    bind: 0.0.0.0
# end of file
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write(tmp_path / "config.yaml", USER_FILE)


def edited(old: str, new: str) -> str:
    assert USER_FILE.count(old) == 1, old
    return USER_FILE.replace(old, new)


def test_proxies_load_in_file_order_with_the_default_bind(cfg: Path) -> None:
    config = load.load_node(cfg)
    assert config.proxies == (
        ProxyConfig("home", "ssh", 2222),
        ProxyConfig(str(B), "nas", 4450, "0.0.0.0"),
    )
    assert config.proxies[0].bind == "127.0.0.1"
    assert [config.resolve_name(p.peer) for p in config.proxies] == [A, B]


def test_the_init_template_has_an_empty_proxies_section(tmp_path: Path) -> None:
    text = load.render_node_config("identity.key", [], [], None)
    assert "\nproxies: []\n" in text
    assert load.load_node(write(tmp_path / "c.yaml", text)).proxies == ()


HEAD = f"version: 1\nidentity_key: k\nnames:\n  home: {A}\nproxies:\n"


@pytest.mark.parametrize(
    ("body", "field", "line", "message"),
    [
        ("  - peer: home\n    service: ssh\n    port: 0\n", "proxies[0].port", 8,
         "out of range 1-65535"),
        ("  - peer: home\n    service: ssh\n    port: 70000\n", "proxies[0].port", 8,
         "out of range 1-65535"),
        ("  - peer: home\n    service: ssh\n    port: '2222'\n", "proxies[0].port", 8,
         "must be a port number"),
        ("  - peer: home\n    service: ssh\n", "proxies[0].port", 6, "is required"),
        ("  - peer: home\n    service: ssh\n    prot: 22\n", "proxies[0].prot", 8,
         "unknown key 'prot'"),
        ("  - peer: laptop\n    service: ssh\n    port: 22\n", "proxies[0].peer", 6,
         "'laptop' is neither a peer ID nor a name"),
        ("  - peer: home\n    service: SSH\n    port: 22\n", "proxies[0].service", 7,
         "invalid service name"),
        ("  - peer: home\n    service: ssh\n    port: 22\n    bind: localhost\n",
         "proxies[0].bind", 9, "not an IP address"),
        ("  - peer: home\n    port: 22\n", "proxies[0].service", 6, "is required"),
        ("  - home ssh 22\n", "proxies[0]", 6, "must be a mapping"),
        ("  home: ssh\n", "proxies", 6, "must be a list"),
        ("  - peer: home\n    service: ssh\n    port: 22\n"
         "  - peer: home\n    service: web\n    port: 22\n    bind: 127.0.0.1\n",
         "proxies[1]", 9,
         r"127.0.0.1:22 is already used by proxies\[0\] \(127.0.0.1:22 -> home/ssh, line 6\)"),
        ("  - {peer: home, service: ssh, port: 22, bind: '::1'}\n"
         "  - {peer: home, service: web, port: 22, bind: '0:0::1'}\n",
         "proxies[1]", 7,
         r"\[0:0::1\]:22 is already used by proxies\[0\] \(\[::1\]:22 -> home/ssh"),
    ],
)  # fmt: skip
def test_invalid_entries_name_file_line_and_key(
    tmp_path: Path, body: str, field: str, line: int, message: str
) -> None:
    path = write(tmp_path / "config.yaml", HEAD + body)
    with pytest.raises(ConfigError, match=message) as info:
        load.load_node(path)
    assert (info.value.path, info.value.field, info.value.line) == (
        str(path),
        field,
        line,
    )
    assert str(info.value).startswith(f"{path}:{line}: {field}: ")


def test_same_port_on_two_addresses_is_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        HEAD + "  - {peer: home, service: ssh, port: 22}\n"
        "  - {peer: home, service: web, port: 22, bind: 0.0.0.0}\n",
    )
    assert [p.listen for p in load.load_node(path).proxies] == [
        "127.0.0.1:22",
        "0.0.0.0:22",
    ]


@pytest.mark.parametrize("name", ["add", "list", "remove"])
def test_proxy_command_words_are_refused_as_peer_names(
    cfg: Path, tmp_path: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match="reserved") as info:
        load.set_name(cfg, name, A)
    assert info.value.hint is not None and "add, list, remove" in info.value.hint
    assert cfg.read_text() == USER_FILE
    path = write(tmp_path / "c.yaml", f"version: 1\nidentity_key: k\nnames:\n"
                                      f"  {name}: {A}\n")  # fmt: skip
    with pytest.raises(ConfigError, match="reserved") as info:
        load.load_node(path)
    assert (info.value.field, info.value.line) == (f"names.{name}", 4)


def test_proxy_config_refuses_what_makes_no_sense() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        ProxyConfig("home", "ssh", 0)
    with pytest.raises(ConfigError, match="not an IP address"):
        ProxyConfig("home", "ssh", 22, "[::1]")
    with pytest.raises(ConfigError, match="reserved"):
        ProxyConfig("home", "ping", 22)
    with pytest.raises(ConfigError, match="neither a peer ID nor a name"):
        ProxyConfig("/ip4/1.2.3.4/tcp/1", "ssh", 22)
    assert ProxyConfig("home", "ssh", 22, "::1").listen == "[::1]:22"


# --- editing -------------------------------------------------------------------------


def test_add_appends_after_the_last_entry_keeping_comments(cfg: Path) -> None:
    load.add_proxy(cfg, ProxyConfig("home", "web", 8080))
    assert cfg.read_text() == edited(
        "    bind: 0.0.0.0\n# end of file",
        "    bind: 0.0.0.0\n  - peer: home\n    service: web\n    port: 8080\n"
        "    bind: 127.0.0.1\n# end of file",
    )
    assert load.load_node(cfg).proxies[-1] == ProxyConfig("home", "web", 8080)


def test_add_then_remove_restores_the_file(cfg: Path) -> None:
    load.add_proxy(cfg, ProxyConfig(str(A), "web", 8080, "::1"))
    assert load.load_node(cfg).proxies[-1].bind == "::1"
    removed = load.remove_proxy(cfg, 8080)
    assert removed == ProxyConfig(str(A), "web", 8080, "::1")
    assert cfg.read_text() == USER_FILE


def test_remove_first_entry_leaves_the_next_ones_comment(cfg: Path) -> None:
    assert load.remove_proxy(cfg, 2222) == ProxyConfig("home", "ssh", 2222)
    assert cfg.read_text() == edited(
        "  - peer: home\n    service: ssh   # sshd there\n    port: 2222\n", ""
    )


def test_remove_every_entry_leaves_an_empty_list(cfg: Path) -> None:
    load.remove_proxy(cfg, 4450)
    load.remove_proxy(cfg, 2222, "127.0.0.1")
    text = cfg.read_text()
    assert "proxies: []\n  # ssh to the home box\n\n  # the NAS, by peer ID\n" in text
    assert load.load_node(cfg).proxies == ()
    load.add_proxy(cfg, ProxyConfig("home", "ssh", 2222))
    assert load.load_node(cfg).proxies == (ProxyConfig("home", "ssh", 2222),)


def test_edits_on_the_init_template(tmp_path: Path) -> None:
    text = load.render_node_config("identity.key", ["/ip4/0.0.0.0/tcp/4001"], [], None)
    path = write(tmp_path / "config.yaml", text)
    load.set_name(path, "home", A)
    named = path.read_text()
    load.add_proxy(path, ProxyConfig("home", "ssh", 2222))
    assert path.read_text() == named.replace(
        "proxies: []\n",
        "proxies:\n  - peer: home\n    service: ssh\n    port: 2222\n"
        "    bind: 127.0.0.1\n",
    )
    load.remove_proxy(path, 2222)
    assert path.read_text() == named


@pytest.mark.parametrize(
    ("text", "expected_tail"),
    [
        # No proxies: section: it is added at the end, before trailing comments.
        ("version: 1\nidentity_key: k\n# tail\n",
         "identity_key: k\nproxies:\n  - peer: {A}\n    service: ssh\n"
         "    port: 22\n    bind: 127.0.0.1\n# tail\n"),
        # An empty "proxies:" (null) with a comment.
        ("version: 1\nidentity_key: k\nproxies:   # none yet\n# tail\n",
         "proxies:   # none yet\n  - peer: {A}\n    service: ssh\n"
         "    port: 22\n    bind: 127.0.0.1\n# tail\n"),
        # A zero-indented block list, as some people write.
        ("version: 1\nidentity_key: k\nproxies:\n- peer: {A}\n  service: web\n"
         "  port: 80\nnames: {{}}\n",
         "proxies:\n- peer: {A}\n  service: web\n  port: 80\n- peer: {A}\n"
         "  service: ssh\n  port: 22\n  bind: 127.0.0.1\nnames: {{}}\n"),
    ],
)  # fmt: skip
def test_add_splices_into_each_layout(
    tmp_path: Path, text: str, expected_tail: str
) -> None:
    path = write(tmp_path / "c.yaml", text.format(A=A))
    load.add_proxy(path, ProxyConfig(str(A), "ssh", 22))
    assert path.read_text().endswith(expected_tail.format(A=A))
    assert load.load_node(path).proxies[-1] == ProxyConfig(str(A), "ssh", 22)


def test_flow_style_list_is_edited_through_the_tree(tmp_path: Path) -> None:
    text = (
        "version: 1  # v\nidentity_key: k\n"
        f"proxies: [{{peer: {A}, service: web, port: 80}}]\n"
    )
    path = write(tmp_path / "c.yaml", text)
    load.add_proxy(path, ProxyConfig(str(A), "ssh", 22))
    config: NodeConfig = load.load_node(path)
    assert [p.port for p in config.proxies] == [80, 22]
    assert path.read_text().startswith("version: 1  # v\n")
    load.remove_proxy(path, 80)
    assert [p.port for p in load.load_node(path).proxies] == [22]


def test_add_on_a_taken_bind_port_is_refused_with_the_remove_command(
    cfg: Path,
) -> None:
    with pytest.raises(ConfigError, match="already listens on 0.0.0.0:4450") as info:
        load.add_proxy(cfg, ProxyConfig("home", "web", 4450, "0.0.0.0"))
    assert (info.value.field, info.value.line) == ("proxies[1]", 16)
    assert info.value.hint is not None
    assert "`peerup proxy remove 4450 --bind 0.0.0.0`" in info.value.hint
    assert cfg.read_text() == USER_FILE


def test_add_with_an_undefined_name_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="'laptop' is neither") as info:
        load.add_proxy(cfg, ProxyConfig("laptop", "ssh", 2200))
    assert info.value.field == "proxies[2].peer"
    assert cfg.read_text() == USER_FILE


def test_remove_unknown_or_ambiguous_port_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="no proxy on port 22$") as info:
        load.remove_proxy(cfg, 22)
    assert info.value.hint == (
        f"defined: 127.0.0.1:2222 (home/ssh), 0.0.0.0:4450 ({B}/nas)"
    )
    load.add_proxy(cfg, ProxyConfig("home", "web", 2222, "0.0.0.0"))
    with pytest.raises(ConfigError, match="2 proxies use port 2222") as info:
        load.remove_proxy(cfg, 2222)
    assert info.value.hint is not None and "--bind" in info.value.hint
    assert load.remove_proxy(cfg, 2222, "0.0.0.0").service == "web"
    assert cfg.read_text() == USER_FILE


def test_removing_a_name_a_proxy_uses_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="would make the file invalid") as info:
        load.remove_name(cfg, "home")
    assert info.value.field == "proxies[0].peer"
    assert cfg.read_text() == USER_FILE
