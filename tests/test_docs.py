"""README documents what the code reads, and the two commands come first."""

import re

import config

from server import ROOT

README = (ROOT / "README.md").read_text()


def documented_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.M))


def test_every_environment_variable_the_app_reads_is_documented():
    assert set(config.ENVIRONMENT) | {"APP_ENV"} <= documented_variables()


def test_every_environment_variable_gunicorn_reads_is_documented():
    read = set(re.findall(r"os\.environ\.get\(\s*['\"]([A-Z_]+)['\"]", (ROOT / "gunicorn.conf.py").read_text()))

    assert read and read <= documented_variables()


def test_readme_starts_with_make_run_and_make_test():
    first_block = README.split("```")[1]

    assert "make run" in first_block and "make test" in first_block
