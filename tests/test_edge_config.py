"""``edge.toml``: the ``[web]`` section, its defaults, and the settings it refuses."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest

from edge.config import EdgeConfig, WebSettings
from edge.web.state import auth_config

EDGE = '[edge]\nsite = "plant-a"\ndata_dir = "data"\nnode_dir = "node"\n'


def load(tmp_path: Path, text: str) -> EdgeConfig:
    path = tmp_path / "edge.toml"
    path.write_text(EDGE + text)
    return EdgeConfig.from_toml(path)


def test_without_a_web_section_every_default_applies(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.web == WebSettings()
    assert config.web.metrics_allow == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    auth = auth_config(config)
    assert auth.issuer == "Zastava plant-a" and auth.sessions.idle == dt.timedelta(hours=12)
    assert config.db == tmp_path / "data" / "edge.db"


def test_the_web_section_is_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[web]
issuer = "Завод А"
origins = ["https://EDGE.plant-a.example:8443/"]
session_idle_minutes = 60
session_absolute_hours = 24
max_body_bytes = 2048
hash_concurrency = 1
login_queue = 0
ws_max_message_bytes = 4096
metrics_allow = ["10.0.0.0/8"]
log_level = "warning"
""",
    )
    web = config.web
    assert web.origins == ("https://edge.plant-a.example:8443",)
    assert web.metrics_allow == (ipaddress.ip_network("10.0.0.0/8"),)
    assert (web.max_body_bytes, web.hash_concurrency, web.login_queue) == (2048, 1, 0)
    auth = auth_config(config)
    assert auth.issuer == "Завод А"
    assert auth.sessions.idle == dt.timedelta(minutes=60)
    assert auth.sessions.absolute == dt.timedelta(hours=24)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[web]\nmax_body = 5\n", r"unknown setting\(s\) in \[web\]: \['max_body'\]"),
        ("[webb]\n", r"unknown section\(s\) \['webb'\]"),
        ('[web]\norigins = ["http://edge:8443"]\n', "is not an https://HOST"),
        ('[web]\norigins = ["https://edge/app"]\n', "is not an https://HOST"),
        ('[web]\norigins = "https://edge"\n', "web.origins must be a list of strings"),
        ("[web]\nmax_body_bytes = true\n", "web.max_body_bytes must be a whole number"),
        ("[web]\nmax_body_bytes = 10\n", "of at least 1024"),
        ("[web]\nsession_idle_minutes = 100\nsession_absolute_hours = 1\n", "must not exceed"),
        ('[web]\nlog_level = "loud"\n', "web.log_level must be one of"),
        ('[web]\nmetrics_allow = ["10.0.0.300/8"]\n', "web.metrics_allow"),
        ('[web]\nissuer = "a:b"\n', "web.issuer must be a non-empty name without ':'"),
    ],
)
def test_a_wrong_setting_is_refused_with_its_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(tmp_path, text)


def test_the_chat_section_is_read_and_checked(tmp_path: Path) -> None:
    from edge.chat.model import MAX_TEXT_BYTES
    from edge.config import MAX_CHAT_TEXT_BYTES, ChatSettings

    assert MAX_CHAT_TEXT_BYTES == MAX_TEXT_BYTES  # the wire format's ceiling, in both places
    assert load(tmp_path, "").chat == ChatSettings()
    assert ChatSettings().attachment_bytes == 25 * 1024 * 1024
    config = load(
        tmp_path,
        "[chat]\nattachment_bytes = 1048576\ntext_bytes = 4096\npending_uploads = 4\n"
        "typing_seconds = 3\naway_minutes = 10\ndurable_commits = true\n",
    )
    assert config.chat == ChatSettings(1048576, 4096, 4, 3, 10, True)
    for text, message in (
        ("[chat]\nattachments = 5\n", r"unknown setting\(s\) in \[chat\]: \['attachments'\]"),
        ("[chat]\ntext_bytes = 70000\n", "chat.text_bytes must be at most 65536"),
        ("[chat]\nattachment_bytes = 0\n", "chat.attachment_bytes must be a whole number"),
        ('[chat]\ndurable_commits = "yes"\n', "chat.durable_commits must be true or false"),
    ):
        with pytest.raises(ValueError, match=message):
            load(tmp_path, text)
