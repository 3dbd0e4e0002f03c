"""The arm64 check's sysroot helpers: Packages parsing, the dependency closure, the cache key and
the merged /usr. ``make check-layer-arm64`` runs the whole thing under qemu."""

from __future__ import annotations

from pathlib import Path

import pytest

from layers.check_layer_arm64 import (
    Package,
    merge_usr,
    parse_packages,
    relation_names,
    resolve,
    roots_for,
    sysroot_key,
)

INDEX = """\
Package: python3.13-minimal
Version: 3.13.5-2
Depends: libpython3.13-minimal (= 3.13.5-2), libexpat1 (>= 2.6.0),
 zlib1g (>= 1:1.2.0)
Pre-Depends: libc6 (>= 2.38)
Description: a description
 spanning lines: with a colon

Package: libpython3.13-minimal
Version: 3.13.5-2
Depends: libc6 (>= 2.17), libssl3t64 (>= 3.4.0)

Package: libpython3.13-stdlib
Version: 3.13.5-2
Depends: media-types | mime-support, tzdata, libc6:any [arm64], mail-transport-agent

Package: media-types
Version: 13.0.0

Package: mailer
Version: 1
Provides: mail-transport-agent, other (= 1)

Package: libc6
Version: 2.41-12
Depends: libgcc-s1

Package: libc6
Version: 2.36-9

Package: libgcc-s1
Version: 14.2.0-19

Package: libexpat1
Version: 2.9.0-1

Package: zlib1g
Version: 1:1.3
Depends: libc6

Package: libssl3t64
Version: 3.5.9-1
Depends: libc6, zlib1g
"""


def test_relation_names_keep_names_and_alternatives_in_order() -> None:
    field = "a (>= 1.0) | b:any, c [arm64], d (= 1:2~rc1) <!nocheck>"
    assert relation_names(field) == (("a", "b"), ("c",), ("d",))
    assert relation_names("") == ()


def test_parse_packages_joins_continuations_and_pre_depends() -> None:
    index = parse_packages(INDEX)
    python = index["python3.13-minimal"]
    assert python.version == "3.13.5-2"
    assert python.depends == (("libc6",), ("libpython3.13-minimal",), ("libexpat1",), ("zlib1g",))
    assert index["libc6"].version == "2.41-12"  # the first record of a name wins
    assert index["mailer"].provides == ("mail-transport-agent", "other")


def test_resolve_follows_first_alternatives_providers_and_skips() -> None:
    index = parse_packages(INDEX)
    closure = resolve(index, roots_for("3.13")[:2], skip=frozenset({"tzdata"}))
    assert [p.name for p in closure] == [
        "libc6",
        "libexpat1",
        "libgcc-s1",
        "libpython3.13-minimal",
        "libpython3.13-stdlib",
        "libssl3t64",
        "mailer",
        "media-types",
        "python3.13-minimal",
        "zlib1g",
    ]


def test_resolve_refuses_what_nothing_satisfies() -> None:
    index = parse_packages(INDEX)
    with pytest.raises(LookupError, match="tzdata"):
        resolve(index, ["libpython3.13-stdlib"], skip=frozenset())
    with pytest.raises(LookupError, match=r"python3\.99-minimal"):
        resolve(index, roots_for("3.99"))


def test_sysroot_key_follows_versions_only() -> None:
    one = [Package("b", "1", ()), Package("a", "2", (("b",),))]
    same = [Package("a", "2", ()), Package("b", "1", ())]
    bumped = [Package("a", "3", ()), Package("b", "1", ())]
    assert sysroot_key("trixie", one) == sysroot_key("trixie", same)
    assert sysroot_key("trixie", one) != sysroot_key("trixie", bumped)
    assert sysroot_key("trixie", one).startswith("trixie-")


def test_merge_usr_links_top_folders_and_moves_their_files(tmp_path: Path) -> None:
    (tmp_path / "lib" / "aarch64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib" / "ld-linux-aarch64.so.1").write_text("loader")
    (tmp_path / "lib" / "aarch64-linux-gnu" / "libc.so.6").write_text("libc")
    (tmp_path / "usr" / "lib" / "aarch64-linux-gnu").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "aarch64-linux-gnu" / "libz.so.1").write_text("zlib")
    merge_usr(tmp_path)
    for name in ("bin", "sbin", "lib"):
        assert (tmp_path / name).is_symlink()
        assert (tmp_path / name).readlink() == Path("usr") / name
    assert (tmp_path / "lib" / "ld-linux-aarch64.so.1").read_text() == "loader"
    assert (tmp_path / "lib" / "aarch64-linux-gnu" / "libc.so.6").read_text() == "libc"
    assert (tmp_path / "lib" / "aarch64-linux-gnu" / "libz.so.1").read_text() == "zlib"
    merge_usr(tmp_path)  # idempotent
    assert (tmp_path / "lib").is_symlink()
