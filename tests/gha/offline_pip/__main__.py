"""`pip install [options] PATH[EXTRAS]...` for local pure-Python projects: copy their packages into
this interpreter's site-packages and write their console scripts. An extra's requirements must already
be importable (the runner's interpreter sees the test environment's packages), as pip would have
installed them. Anything else is refused, loudly."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path


def version(source: Path, project: dict) -> str:
    """`project.version`, or the dynamic version setuptools reads from a module's attribute
    (`[tool.setuptools.dynamic] version = {attr = "package.__version__"}`), read without importing it."""
    if "version" in project["project"]:
        return project["project"]["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, name = attr.rsplit(".", 1)
    path = source / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    sys.exit(f"emulated pip: no {attr} in {path}")


def install(source: Path, extras: list[str]) -> None:
    project = tomllib.loads((source / "pyproject.toml").read_text())
    optional = project["project"].get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            sys.exit(f"emulated pip: {source} has no extra '{extra}'")
        for requirement in optional[extra]:
            name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
            try:
                importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                sys.exit(f"emulated pip: the extra '{extra}' needs {requirement}, which is not installed")
    site = Path(sysconfig.get_paths()["purelib"])
    patterns = (
        project.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", ["*"])
    )
    for folder in sorted(source.iterdir()):
        if (folder / "__init__.py").exists() and any(fnmatch.fnmatch(folder.name, p) for p in patterns):
            shutil.rmtree(site / folder.name, ignore_errors=True)
            shutil.copytree(folder, site / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    meta = {**project["project"], "version": version(source, project)}
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    for name, target in meta.get("scripts", {}).items():
        module, function = target.split(":")
        script = Path(sys.executable).parent / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)
    print(f"Successfully installed {meta['name']}-{meta['version']} (offline emulation)")


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "install":
        sys.exit("emulated pip: only `pip install PATH` is supported")
    sources, rest = [], iter(args[1:])
    for arg in rest:
        if arg in ("-c", "--constraint"):  # pinned versions: the test environment's are what we run
            constraints = Path(next(rest, ""))
            if not constraints.is_file():
                sys.exit(f"emulated pip: no constraints file {constraints}")
        elif not arg.startswith("-"):
            sources.append(arg)
    if not sources:
        sys.exit("emulated pip: nothing to install")
    for source in sources:
        match = re.fullmatch(r"(.*?)(?:\[([A-Za-z0-9_,.-]+)\])?", source)
        path, extras = Path(match.group(1)), [e for e in (match.group(2) or "").split(",") if e]
        if not (path / "pyproject.toml").exists():
            sys.exit(f"emulated pip: {source} is not a local project; this runner has no network")
        install(path, extras)


if __name__ == "__main__":
    main()
