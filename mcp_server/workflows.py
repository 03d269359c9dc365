"""The workflows directory behind `maml://workflows`: listing and safe lookup.

A workflow is found by its document id (`urn:uuid:...`) or its file name stem; the caller's text is
only ever compared with names read from the directory, never joined into a path. Symlinks, files
outside the directory, non-regular files and oversized files are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mcp_server.errors import InvalidDocument, MacroslowError, NotFound, RequestTooLarge
from mcp_server.maml import parser

SUFFIX = ".maml.md"


@dataclass(frozen=True)
class WorkflowFile:
    name: str
    path: Path
    text: str


class WorkflowDirectory:
    def __init__(self, path: Path, limits: parser.Limits, max_listed: int = 1000) -> None:
        self.path = path
        self.limits = limits
        self.max_listed = max_listed

    def _read(self, entry: os.DirEntry[str]) -> str | None:
        if not entry.name.endswith(SUFFIX) or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(entry.path, flags)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(self.limits.max_bytes + 1)
        try:
            return parser.to_text(data, self.limits)
        except (InvalidDocument, RequestTooLarge):
            return None

    def files(self) -> list[WorkflowFile]:
        if not self.path.is_dir():
            return []
        found: list[WorkflowFile] = []
        with os.scandir(self.path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if len(found) >= self.max_listed:
                    break
                text = self._read(entry)
                if text is not None:
                    found.append(WorkflowFile(entry.name, Path(entry.path), text))
        return found

    def get(self, ident: str) -> WorkflowFile:
        for wf in self.files():
            if wf.name == ident or wf.name.removesuffix(SUFFIX) == ident:
                return wf
            try:
                if parser.parse(wf.text, self.limits).id == ident:
                    return wf
            except MacroslowError:
                continue
        raise NotFound(f"no workflow {ident[:120]!r}; list maml://workflows for the ids there are")
