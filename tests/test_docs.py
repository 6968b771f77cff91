"""The documentation's examples are true: what a page shows, the tests run.

A page shows a program with ``.. literalinclude:: ../examples/X.py`` and its
output in the ``.. code-block:: text`` right after it; these tests run the
file as a user would and compare its output with the page, line for line.
The shell commands of the Getting started page are run too, against a
private Redis.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from poolx.core import get_broker
from tests.conftest import wait_until
from tests.taskqueue.conftest import delete_prefix, isolated_url

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WAIT = 60
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def blocks(page: Path) -> list[tuple[str, str, str]]:
    """The page's directives in order: (directive, argument, indented body)."""
    found = []
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"\.\. ([\w-]+):: *(.*)$", line)
        if not match:
            continue
        body = []
        for following in lines[i + 1:]:
            if following and not following.startswith("   "):
                break
            body.append(following[3:])
        text = "\n".join(b for b in body if not b.startswith(":")).strip("\n")
        found.append((match.group(1), match.group(2).strip(), text))
    return found


def included_examples(page: Path) -> list[tuple[str, str | None]]:
    """(example file, the output the page shows for it, or None) per included example."""
    shown = []
    directives = blocks(page)
    for i, (kind, arg, _) in enumerate(directives):
        after = directives[i + 1] if i + 1 < len(directives) else None
        if kind == "literalinclude" and arg.startswith("../examples/"):
            output = after[2] + "\n" if after and after[:2] == ("code-block", "text") else None
            shown.append((arg.removeprefix("../"), output))
    return shown


INCLUDED = sorted({(page.name, script, output) for page in DOCS.glob("*.rst")
                   for script, output in included_examples(page)}, key=str)
PROGRAMS = [(page, script, output) for page, script, output in INCLUDED if output is not None]


def test_the_pages_that_must_show_programs_do():
    pages = {page for page, _, _ in PROGRAMS}
    assert {"index.rst", "getting-started.rst"} <= pages
    assert ("index.rst", "examples/quickstart.py") in {(p, s) for p, s, _ in PROGRAMS}


def test_every_included_example_is_run_by_a_test():
    """An example shown without its output is run (and checked) by another test."""
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for page, script, output in INCLUDED:
        assert (ROOT / script).is_file(), (page, script)
        if output is None:
            assert script in tests, f"{page} shows {script}, which no test runs"


@pytest.mark.parametrize("page, script, output", PROGRAMS)
def test_a_shown_program_prints_what_its_page_says(page, script, output):
    done = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == output, f"{page} shows other output for {script}:\n{done.stdout}"


def assert_example_prints_the_same_on(page: str, url: str) -> None:
    """The program ``page`` shows, run with ``url`` as its argument (a Redis
    URL), prints what the page shows it printing on memory://."""
    [(script, shown)] = included_examples(DOCS / page)
    done = subprocess.run([sys.executable, script, url], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown


def shell_commands(page: Path) -> list[list[str]]:
    """The commands of the page's ``sh`` blocks, split, without comments."""
    commands = []
    for kind, arg, body in blocks(page):
        if kind == "code-block" and arg == "sh":
            for line in body.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    commands.append(re.findall(r"'[^']*'|\S+", line))
    return [[word.strip("'") for word in command] for command in commands]


@pytest.mark.redis
def test_getting_started_commands_on_redis(redis_server, tmp_path):
    """The worker, enqueue and status commands, as the page shows them."""
    commands = {c[1]: c for c in shell_commands(DOCS / "getting-started.rst") if c[0] == "poolx"}
    assert set(commands) == {"worker", "enqueue", "status"}
    url = isolated_url(redis_server.url)

    def run(command: list[str]) -> list[str]:
        return [url if word == "redis://localhost:6379/0" else word for word in command]

    log = tmp_path / "worker.log"
    with open(log, "w") as err:  # in examples/, as the page says
        worker = subprocess.Popen([sys.executable, "-m", *run(commands["worker"])],
                                  cwd=ROOT / "examples", env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=err)
    try:
        wait_until(lambda: "Press CTRL+C" in log.read_text() or worker.poll() is not None, WAIT)
        assert worker.poll() is None, log.read_text()
        done = subprocess.run([sys.executable, "-m", *run(commands["enqueue"])], cwd=tmp_path,
                              env=ENV, capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr + log.read_text()
        task_id, value = done.stdout.splitlines()
        assert re.fullmatch(r"[0-9a-f]{32}", task_id) and value == "6"
        status = subprocess.run([sys.executable, "-m", *run(commands["status"])], cwd=tmp_path,
                                env=ENV, capture_output=True, text=True, timeout=WAIT)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("1 worker pool on "), status.stdout
        worker.send_signal(signal.SIGTERM)  # "stops gracefully on SIGTERM"
        assert worker.wait(WAIT) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        get_broker(url).discard_pending_tasks()
        delete_prefix(url)


IMPORT = re.compile(r"^\s*(from poolx[\w.]* import [^#]+|import poolx[\w.]*)")


def shown_imports() -> list[tuple[str, str]]:
    """Every poolx import a page or the README shows: (file, statement)."""
    found = []
    for path in [*sorted(DOCS.glob("*.rst")), ROOT / "README.md"]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = IMPORT.match(line)
            if not match:
                continue
            statement = match.group(1).strip()
            j = i
            while statement.endswith("(") or ("(" in statement and ")" not in statement):
                j += 1
                statement += " " + lines[j].split("#", 1)[0].strip()
            found.append((path.name, statement))
    return found


def test_every_import_the_docs_show_works():
    """Pages show how to import poolx's names: each statement must run as shown."""
    shown = shown_imports()
    assert ("README.md", "from poolx import Pool") in shown
    failures = []
    for name, statement in shown:
        try:
            exec(statement, {})
        except ImportError as exc:
            failures.append(f"{name}: {statement}: {exc}")
    assert not failures, "\n".join(failures)


def readme_programs() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(readme_programs())))
def test_a_readme_program_prints_what_its_comments_say(index, tmp_path):
    """Each Python block of the README runs as shown; ``print(...)  # X`` prints X."""
    source = readme_programs()[index]
    expected = [m.group(1).strip() for m in re.finditer(r"print\(.*\)\s+# (.+)$", source, re.M)]
    assert expected, source
    script = tmp_path / "readme_example.py"
    script.write_text(source)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    lines = iter(done.stdout.splitlines())
    missing = [line for line in expected if line not in lines]  # in order
    assert not missing, f"README block {index} printed:\n{done.stdout}"
