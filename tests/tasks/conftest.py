"""The loopback OpenAI server and settings using it (tests/llm's fixtures), for deferred tasks."""

from tests.llm.conftest import fake, fake_server, llm_settings  # noqa: F401
