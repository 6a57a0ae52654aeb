"""The serving benchmark (benchmarks/serving.py, servers.py, report_serving.py) against a fake
OpenAI-compatible server: a stdlib HTTP server that streams `max_tokens` chunks and a usage chunk, started
and stopped by the same launcher that runs llama-server and clova-edge serve."""

from __future__ import annotations

import sys
import textwrap

import pytest

from clova_edge.benchmarks import report_serving, servers, serving

FAKE = textwrap.dedent('''
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    START = time.time()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":     # "loading" for a moment: the launcher must poll
                self._json(200 if time.time() - START > 0.3 else 503, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "no"}})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if req.get("model") != "fake" or not req.get("ignore_eos") or not req.get("stream"):
                return self._json(400, {"error": {"message": "bad request"}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            n = req["max_tokens"]
            for i in range(n):
                time.sleep(0.002)
                chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\\n\\n".encode())
            usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n}}
            self.wfile.write(f"data: {json.dumps(usage)}\\n\\ndata: [DONE]\\n\\n".encode())

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


def test_launcher_and_client_against_a_fake_server(tmp_path):
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE)
    port = servers.free_port()
    server = servers.Server([sys.executable, str(script), str(port)], port, tmp_path / "fake.log", timeout=30)
    with server as url:
        res = serving.measure(url, (1, 2), max_tokens=8, prompts=serving.PROMPTS[:2],
                              server_pid=server.proc.pid)
    assert server.proc.poll() is not None          # stopped on exit
    for n in ("1", "2"):
        s = res[n]
        assert (s["requests"], s["errors"], s["short_answers"]) == (2 * int(n), 0, 0), s.get("first_errors")
        assert s["completion_tokens"] == 8 * 2 * int(n) and s["tokens_from"] == ["usage"]
        assert s["aggregate_tok_s"] > 0 and 0 < s["ttft_s"]["p50"] <= s["latency_s"]["p50"]
        assert s["model"] == "fake" and s["server_cpu_cores"] >= 0 and s["other_cpu_cores"] >= 0


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    port = servers.free_port()
    args = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(servers.ServerError, match="no model here"):
        with servers.Server(args, port, tmp_path / "x.log", timeout=30):
            pass


def test_serving_table_and_targets():
    def row(runtime, *aggs):
        return {"runtime": runtime, "streams": {str(n): {"aggregate_tok_s": a, "requests": 4, "errors": 0,
                                                         "latency_s": {"p50": 1.0, "p95": 2.0},
                                                         "ttft_s": {"p50": 0.1, "p95": 0.2}}
                                                for n, a in zip((1, 2, 4), aggs)}}
    section = {"spec": {"prompts": 4, "max_tokens": 128, "slots": 4, "threads": 2},
               "rows": {"llama-server Q4_0": row("llama-server", 20, 30, 40),
                        "llama-server Q4_K_M": row("llama-server", 18, 28, 36),
                        "clova-edge serve int4": row("clova-edge", 20, 40, 60),
                        "broken": {"runtime": "clova-edge", "error": "x"}}}
    assert report_serving.ratios(section, "clova-edge serve int4", "4") == (3.0, 1.5)
    assert report_serving.ratios(section, "llama-server Q4_K_M", "4") == (2.0, 0.9)   # vs the fastest peer
    goals = report_serving.targets(section)
    assert [ok for _, _, ok in goals] == [True, True]
    md = "\n".join(report_serving.markdown(section))
    assert "| clova-edge serve int4 | 4 | 60.0 | 3.00 | 1.50 |" in md and "| broken | failed |" in md
    assert report_serving.markdown({}) == []
