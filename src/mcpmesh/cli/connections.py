"""What `mcpmesh connect` did to each client's config file, kept so that `disconnect` undoes exactly
that: the entries it added, a backup of the file as it was, and a digest of what it wrote.

The record lives in the user's state folder ($XDG_STATE_HOME/mcpmesh, ~/.local/state/mcpmesh), beside
nothing of the mesh's: the files it describes are the user's, wherever the mesh's state_dir is."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mcpmesh.errors import ConfigError

RECORD_FILE = "connections.json"
BACKUP_SUFFIX = ".mcpmesh-backup"
NEW_FILE_MODE = 0o600  # client configs may hold tokens: a file we create is the user's alone


@dataclass
class Record:
    client: str
    path: str
    mesh: str
    existed: bool  # the file was there before the first connect
    backup: str | None  # a copy of it as it was then
    made_folder: str | None = None  # the outermost folder connect had to create for it
    via: str = "file"  # "cli": the client's own CLI made the changes
    written: str | None = None  # sha256 of the text connect last wrote (file edits)
    entries: dict[str, Any] = field(default_factory=dict)  # name -> the definition connect added

    @property
    def backup_path(self) -> Path | None:
        return Path(self.backup) if self.backup else None


class Connections:
    """Every record, by client and file; saved atomically after each change."""

    def __init__(self, file: Path, records: dict[str, Record]):
        self.file, self.records = file, records

    @classmethod
    def load(cls) -> Connections:
        file = state_folder() / RECORD_FILE
        text = read_text(file)
        try:
            raw = json.loads(text) if text else {}
            return cls(file, {key: Record(**value) for key, value in raw.items()})
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ConfigError(str(file), f"the record of connections cannot be read ({exc})") from exc

    def get(self, client: str, path: Path) -> Record | None:
        return self.records.get(_key(client, path))

    def start(self, client: str, path: Path, mesh: str, text: str | None) -> Record:
        """A record of a first change to this file: back it up as it is now."""
        backup = None
        if text is not None:
            backup = str(path.with_name(path.name + BACKUP_SUFFIX))
            atomic_write(Path(backup), text)
        record = Record(client, str(path), mesh, existed=text is not None, backup=backup)
        record.made_folder = _outermost_missing(path.parent)
        self.records[_key(client, path)] = record
        return record

    def forget(self, record: Record) -> None:
        if record.backup_path is not None:
            record.backup_path.unlink(missing_ok=True)
        self.records.pop(_key(record.client, Path(record.path)), None)

    def save(self) -> None:
        atomic_write(self.file, json.dumps({key: asdict(r) for key, r in self.records.items()}, indent=2) + "\n")


def state_folder() -> Path:
    home = Path(os.environ.get("HOME") or Path.home())
    return Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "mcpmesh"


def read_text(path: Path) -> str | None:
    """The file's exact text (no newline translation), None when it does not exist."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read it ({exc})") from exc


def atomic_write(path: Path, text: str) -> None:
    """Write a temporary file beside it, then rename it over: a reader sees the old file or the new
    one, never half of one. A symlinked config is written where it points; the file keeps its mode."""
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o7777 if target.exists() else NEW_FILE_MODE
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_made_folders(path: Path, made_folder: str | None) -> None:
    """Remove the folders connect created for a file, when nothing else was put in them since."""
    if made_folder is None:
        return
    folder, top = path.parent, Path(made_folder)
    while folder.is_relative_to(top) and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        if folder == top:
            return
        folder = folder.parent


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key(client: str, path: Path) -> str:
    return f"{client}:{path.absolute()}"


def _outermost_missing(folder: Path) -> str | None:
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
    return str(missing) if missing else None
