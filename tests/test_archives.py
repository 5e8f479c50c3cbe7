"""Split zip archives: joined in order, checked member by member, extracted once into a cache."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.sources import archives
from distill.sources.archives import MARKER, ArchiveError, resolve_parts, unpack_split_zip

KEY = "teacher.archive"
FILES = {
    "model/config.json": b'{"model_type": "bert"}',
    "model/weights.bin": bytes(range(256)) * 40,
    "model/sub/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}


def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], deflate: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names some tests need
        with zipfile.ZipFile(buffer, "w", compression=method) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def split(data: bytes, folder: Path, stem: str = "model.zip", count: int = 3) -> list[Path]:
    """Cut ``data`` into ``count`` files named like the PyPI parts: model.zip.001, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(data) // count)
    parts = []
    for i in range(count):
        part = folder / f"{stem}.{i + 1:03d}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    entries = [("model/", b""), *FILES.items()]
    return split(zip_bytes(entries), tmp_path / "parts")


def extracted_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def test_round_trip(parts: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = unpack_split_zip(parts, KEY, cache)
    assert root.parent == cache and root.name.startswith("model-")
    assert extracted_files(root) == FILES
    marker = json.loads((root / MARKER).read_text())
    joined = b"".join(p.read_bytes() for p in parts)
    assert marker["archive_bytes"] == len(joined)
    assert marker["files"] == {name: len(data) for name, data in FILES.items()}
    assert [p["name"] for p in marker["parts"]] == [
        "model.zip.001",
        "model.zip.002",
        "model.zip.003",
    ]
    leftovers = [p.name for p in cache.iterdir() if p != root and not p.name.endswith(".lock")]
    assert leftovers == []  # no joined zip, no staging folder


def test_default_cache_root_follows_distill_cache(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "env-cache"))
    root = unpack_split_zip(parts, KEY)
    assert root.parent == tmp_path / "env-cache" / "archives"


def test_second_call_reuses_the_extraction(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = unpack_split_zip(parts, KEY, tmp_path / "cache")

    def no_extraction(*args: object, **kwargs: object) -> Path:
        raise AssertionError("extracted again")

    monkeypatch.setattr(archives, "_extract", no_extraction)
    assert unpack_split_zip(parts, KEY, tmp_path / "cache") == root


def test_changed_part_gets_a_new_folder(parts: list[Path], tmp_path: Path) -> None:
    first = unpack_split_zip(parts, KEY, tmp_path / "cache")
    os.utime(parts[1], ns=(0, 0))
    assert unpack_split_zip(parts, KEY, tmp_path / "cache") != first


def test_stale_staging_and_unfinished_folder_are_redone(parts: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = unpack_split_zip(parts, KEY, cache)
    shutil.rmtree(root)
    # What a killed run leaves: a staging folder, a joined zip, a final folder without marker.
    stale = cache / f".{root.name}.staging-999-dead"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "config.json").write_bytes(b"half")
    (cache / f".{root.name}.staging-999-dead.zip").write_bytes(b"PK")
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_bytes(b"half")
    assert unpack_split_zip(parts, KEY, cache) == root
    assert extracted_files(root) == FILES
    assert not list(cache.glob("*staging*"))


def test_missing_extracted_file_invalidates_the_cache(parts: list[Path], tmp_path: Path) -> None:
    root = unpack_split_zip(parts, KEY, tmp_path / "cache")
    (root / "model" / "weights.bin").unlink()
    assert unpack_split_zip(parts, KEY, tmp_path / "cache") == root
    assert extracted_files(root) == FILES


def test_interrupted_extraction_leaves_nothing_reusable(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    real_copy = archives._copy_member
    calls = []

    def copy_then_die(*args: object) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(archives, "_copy_member", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        unpack_split_zip(parts, KEY, cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(archives, "_copy_member", real_copy)
    assert extracted_files(unpack_split_zip(parts, KEY, cache)) == FILES


def test_concurrent_processes_share_one_extraction(parts: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from distill.sources.archives import unpack_split_zip; "
        "print(unpack_split_zip([Path(p) for p in sys.argv[2:]], 'k', Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache), *map(str, parts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    roots = {out.strip() for out, _ in outputs}
    assert len(roots) == 1
    assert extracted_files(Path(roots.pop())) == FILES
    assert not list(cache.glob("*staging*"))


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("model/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _fifo() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("model/pipe")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


@pytest.mark.parametrize(
    ("entries", "member", "reason"),
    [
        ([("../evil", b"x")], "../evil", "'..'"),
        ([("model/../../evil", b"x")], "model/../../evil", "'..'"),
        ([("/abs/evil", b"x")], "/abs/evil", "absolute path"),
        ([("C:/evil", b"x")], "C:/evil", "absolute path"),
        ([("model\\..\\..\\evil", b"x")], "model\\\\..\\\\..\\\\evil", "backslash"),
        ([(_symlink(), b"/etc/passwd")], "model/link", "symbolic link"),
        ([(_fifo(), b"")], "model/pipe", "not a regular file or folder"),
        ([("model/a.txt", b"1"), ("model/a.txt", b"2")], "model/a.txt", "appears twice"),
        ([("model/a", b"1"), ("model/a/b", b"2")], "model/a", "both a file and a folder"),
        ([(MARKER, b"{}")], MARKER, "marker"),
    ],
)
def test_unsafe_members_are_refused(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], member: str, reason: str, tmp_path: Path
) -> None:
    parts = split(zip_bytes([("model/ok.txt", b"fine"), *entries]), tmp_path / "parts")
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveError) as caught:
        unpack_split_zip(parts, KEY, cache)
    message = str(caught.value)
    assert message.startswith(f"{KEY}: ")
    assert all(str(p) in message for p in parts)
    assert f"member {member!r}" in message or f"member '{member}'" in message
    assert reason in message
    # Refused before anything was written: no file, not even the harmless first one.
    assert not any(p.is_file() and not p.name.endswith(".lock") for p in cache.rglob("*"))
    assert not (tmp_path / "evil").exists()


def test_encrypted_member_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("model/ok.txt", b"fine"), ("model/secret", b"x")]))
    entry = data.rfind(b"PK\x01\x02")  # central directory entry of the last member
    data[entry + 8] |= 0x1  # general purpose flag bit 0: encrypted (zipfile never writes it)
    parts = split(bytes(data), tmp_path / "parts")
    with pytest.raises(ArchiveError, match="member 'model/secret' is encrypted; refused"):
        unpack_split_zip(parts, KEY, tmp_path / "cache")


def test_total_size_limit(parts: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"exceeds the limit of 1000 bytes .*zip bomb"):
        unpack_split_zip(parts, KEY, tmp_path / "cache", max_total_bytes=1000)


def test_compression_ratio_bomb(tmp_path: Path) -> None:
    data = zip_bytes([("model/zeros.bin", bytes(4 << 20))], deflate=True)
    parts = split(data, tmp_path / "parts")
    with pytest.raises(ArchiveError, match=r"'model/zeros.bin' expands \d+x \(limit 200x\)"):
        unpack_split_zip(parts, KEY, tmp_path / "cache")


def test_missing_part_and_directory_part(parts: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "parts" / "model.zip.004"
    with pytest.raises(ArchiveError, match=rf"{KEY}: archive part {missing} does not exist"):
        unpack_split_zip([*parts, missing], KEY, tmp_path / "cache")
    folder = tmp_path / "parts" / "model.zip.004"
    folder.mkdir()
    with pytest.raises(ArchiveError, match=rf"archive part {folder} is not a file"):
        unpack_split_zip([*parts, folder], KEY, tmp_path / "cache")
    with pytest.raises(ArchiveError, match="lists no archive parts"):
        unpack_split_zip([], KEY, tmp_path / "cache")


def test_numbered_parts_out_of_order_or_skipped(parts: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="archive parts are out of order: .*model.zip.003, "):
        unpack_split_zip([parts[0], parts[2], parts[1]], KEY, tmp_path / "cache")
    with pytest.raises(ArchiveError, match=r"archive parts are incomplete \(numbers skip\)"):
        unpack_split_zip([parts[0], parts[2]], KEY, tmp_path / "cache")


@pytest.mark.parametrize("order", [(1, 0, 2), (0, 2, 1), (2, 1, 0)])
def test_unnumbered_parts_out_of_order(order: tuple[int, ...], tmp_path: Path) -> None:
    entries = [(f"model/f{i}.bin", os.urandom(3000)) for i in range(3)]
    parts = split(zip_bytes(entries), tmp_path / "parts", count=3)
    named = []
    for part, name in zip(parts, ["first", "second", "third"], strict=True):
        named.append(part.rename(part.with_name(name)))
    shuffled = [named[i] for i in order]
    with pytest.raises(ArchiveError, match="may be incomplete, corrupt or out of order") as caught:
        unpack_split_zip(shuffled, KEY, tmp_path / "cache")
    assert all(str(p) in str(caught.value) for p in shuffled)
    assert not list((tmp_path / "cache").glob("*staging*"))


def test_missing_middle_part_without_numbers(tmp_path: Path) -> None:
    parts = split(zip_bytes(list(FILES.items())), tmp_path / "parts", count=3)
    first, third = (
        parts[0].rename(parts[0].with_name("a")),
        parts[2].rename(parts[2].with_name("c")),
    )
    with pytest.raises(ArchiveError, match="incomplete, corrupt or out of order"):
        unpack_split_zip([first, third], KEY, tmp_path / "cache")


def test_bad_crc_is_refused(tmp_path: Path) -> None:
    payload = b"hello world " * 50
    data = bytearray(zip_bytes([("model/a.txt", b"fine"), ("model/b.txt", payload)]))
    at = data.find(payload) + 7
    data[at] ^= 0xFF
    parts = split(bytes(data), tmp_path / "parts")
    with pytest.raises(ArchiveError, match=r"member 'model/b.txt' is corrupt \(Bad CRC-32"):
        unpack_split_zip(parts, KEY, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]


def test_resolve_parts(parts: list[Path], tmp_path: Path) -> None:
    base = tmp_path / "parts"
    assert resolve_parts([p.name for p in parts], base, KEY) == [p.resolve() for p in parts]
    # pkg: references go through distill.sources.paths (any installed distribution will do here).
    (init,) = resolve_parts(["pkg:pytest/pytest/__init__.py"], base, KEY)
    assert init.name == "__init__.py" and init.is_file()
    with pytest.raises(
        ArchiveError, match=r"teacher.archive\[1\]: 'org/model' is not a local file.*not hub ids"
    ):
        resolve_parts([parts[0].name, "org/model"], base, KEY)
    with pytest.raises(DistillError, match=r"teacher.archive\[0\]: .*does not exist"):
        resolve_parts(["./nowhere.zip.001"], base, KEY)
    with pytest.raises(ArchiveError, match="lists no archive parts"):
        resolve_parts([], base, KEY)
