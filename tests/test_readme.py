"""README's "Try it" block, run as written against the real server on a fresh database,
answers what its `# =>` lines say: the status, the headers, and fields of the JSON body."""

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import empty_database
from server import ROOT

README = (ROOT / "README.md").read_text()
DELIMITER = "@@@ end of answer @@@"


def try_it_block() -> str:
    section = README.split("### Try it", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def steps(block: str) -> list[tuple[str, str | None]]:
    """(command, expected answer or None) in the order written; continued lines joined."""
    result: list[tuple[str, str | None]] = []
    command = ""
    for line in block.splitlines():
        if line.startswith("# =>"):
            result[-1] = (result[-1][0], line.removeprefix("# =>").strip())
            continue
        command += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            result.append((command.strip(), None))
            command = ""
    return result


def parse_expected(expected: str) -> tuple[int, dict[str, str], dict]:
    status, _, rest = expected.partition(" ")
    body = {}
    if "{" in rest:
        rest, brace, tail = rest.partition("{")
        body = json.loads(brace + tail)
    headers = dict(re.findall(r"([A-Z][A-Za-z-]+): (.*?)(?= [A-Z][A-Za-z-]+: |$)", rest.strip()))
    return int(status), headers, body


def parse_answer(raw: str) -> tuple[int, dict[str, str], str]:
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.strip().splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def fresh_server(serve, tmp_path):
    """The real server on a new, empty database whose first user is the README's admin."""
    with empty_database(tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url, "APP_ENV": "testing"}
        flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
        subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
        subprocess.run(
            [*flask, "create-admin", "admin@example.com"],
            cwd=ROOT,
            env=env,
            check=True,
            input="a-long-password\n",
            text=True,
            capture_output=True,
        )
        yield serve(url, as_admin=False), env


def test_the_try_it_block_answers_as_written(fresh_server):
    server, env = fresh_server
    plan = steps(try_it_block())
    script = "set -e\n" + "\n".join(
        command.replace("localhost:8000", server.url.removeprefix("http://")).replace(
            ".venv/bin/flask", f"{sys.executable} -m flask"
        )
        + (f"\necho; echo '{DELIMITER}'" if expected else "")
        for command, expected in plan
    )
    try:
        finished = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        (ROOT / "users.csv").unlink(missing_ok=True)
    assert finished.returncode == 0, finished.stderr
    answers = finished.stdout.split(DELIMITER)[:-1]
    expectations = [expected for _, expected in plan if expected]

    assert len(expectations) >= 8 and len(answers) == len(expectations)
    for expected, raw in zip(expectations, answers, strict=True):
        status, headers, body = parse_expected(expected)
        got_status, got_headers, got_body = parse_answer(raw)
        assert got_status == status, (expected, raw)
        for name, value in headers.items():
            assert got_headers.get(name) == value, (expected, raw)
        if body:
            document = json.loads(got_body)
            assert {key: document.get(key) for key in body} == body, (expected, raw)
