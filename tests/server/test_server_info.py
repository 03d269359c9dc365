"""What the server says about itself in `initialize` (serverInfo: title, icons, websiteUrl)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mcp.client import Client

from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None, **values)  # type: ignore[call-arg]


async def test_server_info_has_a_title_an_icon_and_the_configured_website(tmp_path: Path) -> None:
    site = "https://docs.example.org/macroslow-mcp"
    async with Client(build_server(_settings(tmp_path, website_url=site))) as client:
        info = client.server_info
    assert info is not None
    assert info.name == "macroslow-mcp" and info.title == "MacroSlow MCP"
    assert info.website_url == site
    [icon] = info.icons or []
    assert icon.mime_type == "image/svg+xml" and icon.sizes == ["any"]
    prefix = "data:image/svg+xml;base64,"
    assert icon.src.startswith(prefix) and len(icon.src) < 1024  # small, and needs no request
    svg = base64.b64decode(icon.src.removeprefix(prefix), validate=True).decode()
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert "<script" not in svg and "href" not in svg  # nothing active, nothing fetched


async def test_no_website_unless_configured(tmp_path: Path) -> None:
    async with Client(build_server(_settings(tmp_path))) as client:
        info = client.server_info
    assert info is not None and info.website_url is None and info.title == "MacroSlow MCP"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x.example/", "https://x.example/a b"])
def test_website_url_must_be_a_web_address(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="website_url"):
        _settings(tmp_path, website_url=url)
