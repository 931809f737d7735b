"""The documentation holds together: every relative link in README.md, docs/ and bench/README.md
resolves (file and heading), every setting the code reads is in docs/configuration.md, and the
README stays short and links every page of docs/. Pure file reading: no services needed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
CODE_ROOT = REPO_ROOT / "scanner_core"
CONFIGURATION_PAGE = DOCS / "configuration.md"
README_MAX_LINES = 260

# Names the code reads that are neither the app's settings nor worth a row in configuration.md's
# "Set by the platform" table. Keep it tiny: document a name there rather than list it here.
NOT_SETTINGS: frozenset[str] = frozenset()

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documentation_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md")), REPO_ROOT / "bench" / "README.md"]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        if match := _HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every Markdown link outside code."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if not target or _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO_ROOT)}:{number}: ({target})"
        if not destination.exists():
            problems.append(f"{where} no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where} no heading #{anchor} in {destination.relative_to(REPO_ROOT)}")
    return problems


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert path.is_file(), path
    problems = broken_links(path)
    assert not problems, "broken links:\n  " + "\n  ".join(problems)


def test_the_readme_is_short_and_links_every_page_of_docs() -> None:
    readme = REPO_ROOT / "README.md"
    lines = len(readme.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move material into docs/"
    linked = {(REPO_ROOT / target.partition("#")[0]).resolve() for _, target in links(readme)}
    pages = set(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = sorted(str(page.relative_to(REPO_ROOT)) for page in pages if page.resolve() not in linked)
    assert not missing, f"README.md does not link: {missing}"


# --- The settings the code reads -------------------------------------------------------------------


def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` or a name ``environ`` (a parameter defaulting to it)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _environ_key(node: ast.AST) -> ast.expr | None:
    """The key expression of ``os.environ.get(k)``, ``os.environ[k]``, ``os.getenv(k)``,
    ``environ.get(k)`` or ``k in os.environ``; None for anything else."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
        func = node.func
        if func.attr == "get" and _is_environ(func.value):
            return node.args[0]
        if func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os":
            return node.args[0]
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
        return node.slice
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In):
        if _is_environ(node.comparators[0]):
            return node.left
    return None


def _strings(node: ast.expr | None, constants: dict[str, list[str]]) -> list[str]:
    """The strings an expression stands for: a literal, a module-level constant, or a tuple/list of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        return constants.get(node.id, [])
    if isinstance(node, ast.Starred):
        return _strings(node.value, constants)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for element in node.elts for s in _strings(element, constants)]
    return []


def _module_constants(tree: ast.Module) -> dict[str, list[str]]:
    constants: dict[str, list[str]] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name) and (strings := _strings(value, constants)):
            constants[target.id] = strings
    return constants


def _loop_reads(tree: ast.Module, constants: dict[str, list[str]]) -> Iterator[tuple[ast.AST, list[str]]]:
    """Reads keyed by a loop variable over constants, e.g. ``os.environ.get(name) for name in _NAMES``:
    (the read, the strings the variable takes), within that loop or comprehension only."""
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            scopes = [(node.target, node.iter, node.body)]
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            scopes = [(g.target, g.iter, [node]) for g in node.generators]
        else:
            continue
        for target, iterable, body in scopes:
            strings = _strings(iterable, constants)
            if not isinstance(target, ast.Name) or not strings:
                continue
            for read in (n for statement in body for n in ast.walk(statement)):
                key = _environ_key(read)
                if isinstance(key, ast.Name) and key.id == target.id:
                    yield read, strings


def _env_reading_helpers(tree: ast.Module, constants: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Functions that read the variable named by one of their parameters, e.g. ``_value(name, default)``
    or ``_setting(root, name)`` reading ``PREFIX + name``: name -> (parameter position, prefix)."""
    helpers: dict[str, tuple[int, str]] = {}
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        parameters = [argument.arg for argument in function.args.args]
        for node in ast.walk(function):
            key = _environ_key(node)
            prefix = ""
            if isinstance(key, ast.BinOp) and isinstance(key.op, ast.Add) and len(_strings(key.left, constants)) == 1:
                prefix, key = _strings(key.left, constants)[0], key.right
            if isinstance(key, ast.Name) and key.id in parameters:
                helpers[function.name] = (parameters.index(key.id), prefix)
    return helpers


def _callee(node: ast.expr) -> str:
    """``Name`` or ``module.Name`` -> ``Name``."""
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _settings_classes(trees: dict[Path, ast.Module]) -> list[tuple[Path, ast.ClassDef]]:
    """Classes deriving (directly, or through another one found here) from pydantic's ``BaseSettings``."""
    classes = [(path, node) for path, tree in trees.items() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef)]
    found: list[tuple[Path, ast.ClassDef]] = []
    known = {"BaseSettings"}
    while new := [(p, c) for p, c in classes if c.name not in known and any(_callee(b) in known for b in c.bases)]:
        found += new
        known |= {c.name for _, c in new}
    return found


def _env_prefix(cls: ast.ClassDef) -> str:
    """``model_config = SettingsConfigDict(env_prefix=...)``, else none."""
    for statement in cls.body:
        if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call)
                and any(isinstance(target, ast.Name) and target.id == "model_config" for target in statement.targets)):
            for keyword in statement.value.keywords:
                if keyword.arg == "env_prefix" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


def _field_env_names(statement: ast.AnnAssign, prefix: str) -> list[str]:
    """A field's variables: its ``alias``/``validation_alias`` (a string, or every ``AliasChoices``
    string) in ``Field(...)``, as its value or in ``Annotated[...]``; else prefix + name, upper-cased."""
    aliases: list[str] = []
    value = [statement.value] if statement.value is not None else []
    for node in (n for root in [statement.annotation, *value] for n in ast.walk(root)):
        for keyword in node.keywords if isinstance(node, ast.Call) else []:
            if keyword.arg in ("alias", "validation_alias"):
                alias = keyword.value
                if isinstance(alias, ast.Call) and _callee(alias.func) == "AliasChoices":
                    aliases += [s for argument in alias.args for s in _strings(argument, {})]
                else:
                    aliases += _strings(alias, {})
    assert isinstance(statement.target, ast.Name)
    return aliases or [(prefix + statement.target.id).upper()]


def _is_field(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            and not statement.target.id.startswith("_") and statement.target.id != "model_config"
            and "ClassVar" not in ast.unparse(statement.annotation))


def settings_read_by_the_code() -> dict[str, str]:
    """Every environment variable the code under scanner_core/ reads -> where (the first place found)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sorted(CODE_ROOT.rglob("*.py"))}
    found: dict[str, str] = {}

    def add(names: list[str], path: Path, node: ast.AST) -> None:
        for name in names:
            found.setdefault(name, f"{path.relative_to(REPO_ROOT)}:{getattr(node, 'lineno', 0)}")

    for path, cls in _settings_classes(trees):
        prefix = _env_prefix(cls)
        for statement in cls.body:
            if _is_field(statement):
                assert isinstance(statement, ast.AnnAssign)
                add(_field_env_names(statement, prefix), path, statement)

    for path, tree in trees.items():
        constants = _module_constants(tree)
        helpers = _env_reading_helpers(tree, constants)
        for node in ast.walk(tree):
            if (key := _environ_key(node)) is not None:
                add(_strings(key, constants), path, node)
            if isinstance(node, ast.Call) and _callee(node.func) in helpers:
                position, prefix = helpers[_callee(node.func)]
                if position < len(node.args):
                    add([prefix + s for s in _strings(node.args[position], constants)], path, node)
        for read, strings in _loop_reads(tree, constants):
            add(strings, path, read)
    return found


def test_the_settings_discovery_sees_the_settings_class_and_the_helpers() -> None:
    """Guards the discovery itself: a refactoring that hides settings from it fails here, not silently."""
    found = settings_read_by_the_code()
    for name in ("SCANNER_IDENTIFIER", "TRIVY_TIMEOUT", "SCAN_QUEUE_NAME", "DIGEST_SCHEDULE", "METRICS_ANONYMOUS",
                 "KEV_FEED_URL", "AZURE_CLIENT_ID", "WEBSITE_HOSTNAME"):
        assert name in found, f"{name} is no longer discovered in scanner_core/; teach the discovery its new form"


def test_every_setting_the_code_reads_is_in_the_configuration_page() -> None:
    page = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    missing = {
        name: where for name, where in sorted(settings_read_by_the_code().items())
        if name not in NOT_SETTINGS and not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", page)
    }
    assert not missing, (
        f"{len(missing)} setting(s) read by the code are not in docs/configuration.md "
        "(add a row with the default and meaning):\n  " + "\n  ".join(f"{n}  (read at {w})" for n, w in missing.items())
    )
