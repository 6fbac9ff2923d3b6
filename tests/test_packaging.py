import tomllib

import yaml

from conftest import REPO


def pyproject_pins():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_every_dependency_is_pinned_exactly_and_torch_to_the_cpu_wheel_release():
    pins = pyproject_pins()
    assert all("==" in p for p in pins), pins
    assert "torch==2.13.0" in pins


def test_conda_env_lists_the_same_pins_as_pyproject():
    env = yaml.safe_load((REPO / "envs" / "restyle.yaml").read_text())
    [pip_section] = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert sorted(pip_section["pip"]) == sorted(pyproject_pins())


def test_ci_runs_the_readme_test_command():
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
