"""An OpenAI-compatible server on 127.0.0.1 for the teacher tests and benchmark.

It speaks chat completions and a minimal Batch API (/v1/files, /v1/batches, /v1/batches/{id},
/v1/files/{id}/content). A request is named by the content of its last message; `faults` maps a
name to the faults its successive requests meet, after which it is answered normally:

    "429" or "429@<seconds>"  rate limited, with Retry-After (default 0.1 s)
    "500"                     server error
    "400"                     bad request (not worth retrying)
    "auth"                    401 whose message echoes the key, as OpenAI's does
    "slow"                    replies after `slow_s` seconds (beyond the client's timeout)
    "drop"                    closes the connection without replying
    "malformed"               200 with a body that is not JSON
    "badschema"               valid completion whose content breaks the schema
    "notjson"                 valid completion whose content is not JSON
    "batchfail"               (in a batch) the line fails with a 500

`batch_endings` lists how successive batches end: "completed" (the default once the list is
used up), "failed" (rejected whole: no output or error file, a reason in `errors`) or "expired"
(the first half of its lines answered, the rest in the error file as `batch_expired`).

The answer is `echo: <content>`, or `{"answer": "<content>"}` when a schema was asked for.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def billed_prompt_tokens(body: dict) -> int:
    """The input tokens of a chat request as OpenAI bills them, for a model tiktoken knows: 3
    tokens of markup a message, its role and content, 3 priming the reply, and the
    response_format's JSON. Any other model: a quarter of the messages' characters."""
    from restyle.teacher import tiktoken_encoding  # the encodings restyle ships, offline

    encoding = tiktoken_encoding(body["model"])
    if encoding is None:
        return sum(len(str(m["content"])) for m in body["messages"]) // 4 + 1

    def tokens(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    schema = json.dumps(body["response_format"]) if body.get("response_format") else ""
    return 3 + tokens(schema) + sum(3 + tokens(m["role"]) + tokens(str(m["content"]))
                                    for m in body["messages"])


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections a concurrent client opens at once


class ChatServer:
    def __init__(self, faults: dict[str, list[str]] | None = None, latency: float = 0.0,
                 slow_s: float = 2.0, batch_pending_polls: int = 0,
                 batch_endings: list[str] | None = None):
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.latency, self.slow_s = latency, slow_s
        self.batch_pending_polls = batch_pending_polls  # retrieves that still see "in_progress"
        self.batch_endings = list(batch_endings or [])
        self.requests: list[str] = []  # name of every chat request received, in order
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.httpd = _HTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, name: str) -> int:
        with self.lock:
            return self.requests.count(name)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def take_fault(self, body: dict) -> tuple[str, str | None]:
        """Log one chat request; return its name and the fault it meets, if any."""
        name = str(body["messages"][-1]["content"])
        with self.lock:
            self.requests.append(name)
            queue = self.faults.get(name)
            return name, (queue.pop(0) if queue else None)

    def completion(self, body: dict, name: str, fault: str | None) -> dict:
        if fault == "badschema":
            content = json.dumps({"wrong": 1})
        elif fault == "notjson":
            content = "Sure! Here is your answer."
        elif body.get("response_format"):
            content = json.dumps({"answer": name})
        else:
            content = f"echo: {name}"
        prompt = billed_prompt_tokens(body)
        return {"id": self.next_id("chatcmpl"), "object": "chat.completion",
                "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4 + 1,
                          "total_tokens": prompt + len(content) // 4 + 1}}

    def run_batch(self, input_file_id: str) -> dict:
        """Answer the lines of an uploaded batch file at once; the result fields and final status
        of the batch object."""
        ending = self.batch_endings.pop(0) if self.batch_endings else "completed"
        lines = [json.loads(line) for line in self.files[input_file_id].decode().splitlines()]
        if ending == "failed":
            return {"status": "failed", "output_file_id": None, "error_file_id": None,
                    "errors": {"object": "list", "data": [
                        {"code": "invalid_request", "message": "scripted batch failure",
                         "line": None, "param": None}]}}
        answered = lines if ending == "completed" else lines[:len(lines) // 2]
        out, err = [], []
        for row in lines:
            if row not in answered:
                err.append({"id": self.next_id("req"), "custom_id": row["custom_id"],
                            "response": None, "error": {"code": "batch_expired",
                                                        "message": "This request expired"}})
                continue
            name, fault = self.take_fault(row["body"])
            if fault == "batchfail":
                err.append({"id": self.next_id("req"), "custom_id": row["custom_id"],
                            "response": {"status_code": 500, "body": {
                                "error": {"message": "server had an error"}}}, "error": None})
            else:
                out.append({"id": self.next_id("req"), "custom_id": row["custom_id"],
                            "response": {"status_code": 200,
                                         "body": self.completion(row["body"], name, fault)},
                            "error": None})
        ids = []
        for rows in (out, err):
            file_id = self.next_id("file") if rows else None
            if file_id:
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            ids.append(file_id)
        return {"status": ending, "output_file_id": ids[0], "error_file_id": ids[1],
                "request_counts": {"total": len(lines), "completed": len(out),
                                   "failed": len(err)}}


def _handler(server: ChatServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms stall

        def log_message(self, *args) -> None:
            pass

        def send(self, status: int, payload: dict | bytes, headers: dict | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, message: str, headers: dict | None = None) -> None:
            self.send(status, {"error": {"message": message, "type": "test", "code": None}},
                      headers)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                if self.path == "/v1/chat/completions":
                    self.chat(json.loads(raw))
                elif self.path == "/v1/files":
                    self.upload(raw)
                elif self.path == "/v1/batches":
                    self.create_batch(json.loads(raw))
                else:
                    self.error(404, f"no route {self.path}")
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                pass

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in server.batches:
                batch = server.batches[parts[2]]
                with server.lock:
                    batch["polls"] += 1
                    done = batch["polls"] > server.batch_pending_polls
                self.send(200, {**batch["object"], "status": "in_progress",
                                **(batch["result"] if done else {})})
            elif parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[2] in server.files:
                self.send(200, server.files[parts[2]])
            else:
                self.error(404, f"no route {self.path}")

        def chat(self, body: dict) -> None:
            name, fault = server.take_fault(body)
            if server.latency:
                time.sleep(server.latency)
            if fault and fault.startswith("429"):
                wait = fault.partition("@")[2] or "0.1"
                return self.error(429, "rate limited", {"Retry-After": wait})
            if fault in ("500", "400"):
                return self.error(int(fault), f"scripted {fault}")
            if fault == "auth":
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                return self.error(401, f"Incorrect API key provided: {key}")
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if fault == "malformed":
                return self.send(200, b'{"id": "x", "choices": [')
            if fault == "slow":
                time.sleep(server.slow_s)
            return self.send(200, server.completion(body, name, fault))

        def upload(self, raw: bytes) -> None:
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            msg = email.message_from_bytes(head + raw, policy=email.policy.HTTP)
            file_id = server.next_id("file")
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    server.files[file_id] = part.get_payload(decode=True)
            self.send(200, {"id": file_id, "object": "file", "bytes": len(server.files[file_id]),
                            "created_at": int(time.time()), "filename": "batch.jsonl",
                            "purpose": "batch", "status": "processed"})

        def create_batch(self, body: dict) -> None:
            batch_id = server.next_id("batch")
            obj = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                   "input_file_id": body["input_file_id"],
                   "completion_window": body["completion_window"], "status": "validating",
                   "created_at": int(time.time())}
            server.batches[batch_id] = {"object": obj, "polls": 0,
                                        "result": server.run_batch(body["input_file_id"])}
            self.send(200, obj)

    return Handler
