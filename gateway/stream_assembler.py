"""Re-assembles an OpenAI chat-completion SSE stream into one completion, for the log.

Pure: fed the raw bytes as they pass through (split anywhere), it never changes them.
Caps what it keeps (``max_bytes``) so that a long stream cannot exhaust memory.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 4 << 20


class StreamAssembler:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._buffer = b""
        self._max = max_bytes
        self._size = 0
        self.truncated = False
        self.id: str | None = None
        self.model: str | None = None
        self.content: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line.strip())
        if len(self._buffer) > self._max:  # a line without end: stop collecting it
            self._buffer = b""
            self.truncated = True

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        self.id = self.id or event.get("id")
        self.model = self.model or event.get("model")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and not self.truncated:
                self._size += len(text)
                if self._size > self._max:
                    self.truncated = True
                else:
                    self.content.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        """The stream as one ``chat.completion`` object (first choice only)."""
        return {"id": self.id, "object": "chat.completion", "model": self.model,
                "choices": [{"index": 0, "finish_reason": self.finish_reason,
                             "message": {"role": "assistant", "content": "".join(self.content)}}],
                "usage": self.usage, "stream_complete": self.done,
                "truncated": self.truncated}
