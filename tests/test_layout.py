"""The shape of the code base, as a newcomer meets it: no import cycle between the top-level files,
short lines and functions, files that fit in one sitting, docs that name only what exists."""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, '*.py')))
MAX_LINE = 110
MAX_FILE_LINES = 1000
LONG_FILES_ALLOWED = {'attention.py'}  # its Triton kernels: one file, read beside the reference


def source(name):
    with open(os.path.join(ROOT, name), encoding='utf-8') as f:
        return f.read()


def project_imports(module):
    """Every project module `module` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source(f'{module}.py'))):
        if isinstance(node, ast.Import):
            names = [alias.name.split('.')[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split('.')[0]]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


def find_cycle(graph):
    """A list of modules forming a cycle, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 'done'
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_no_import_cycle_among_top_level_files():
    graph = {m: project_imports(m) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_lowest_modules_import_no_project_module():
    # what every stage agrees on (formats, tokens, the kernel) must not drag in a stage
    for module in ('configurator', 'shards', 'tokenizer', 'attention', 'shapes_text'):
        assert project_imports(module) <= {'configurator', 'shards', 'tokenizer'}, module


@pytest.mark.parametrize('name', [f'{m}.py' for m in MODULES] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'config', '*.py'))))
def test_lines_are_at_most_110_characters(name):
    long = [i + 1 for i, line in enumerate(source(name).splitlines()) if len(line) > MAX_LINE]
    assert not long, f"{name}: lines longer than {MAX_LINE} characters: {long}"


def test_files_fit_in_one_sitting():
    for module in MODULES:
        n = source(f'{module}.py').count('\n')
        if f'{module}.py' not in LONG_FILES_ALLOWED:
            assert n <= MAX_FILE_LINES, f"{module}.py has {n} lines (at most {MAX_FILE_LINES})"


def function_lengths(name):
    for node in ast.walk(ast.parse(source(name))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_in_train_py_is_longer_than_100_lines():
    long = {n: length for n, length in function_lengths('train.py') if length > 100}
    assert not long, f"train.py: functions longer than 100 lines: {long}"


def defined_names(module):
    """'f' for each top-level function or class, 'C.m' for each method of a class."""
    names = set()
    for node in ast.parse(source(f'{module}.py')).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f'{node.name}.{n.name}' for n in node.body if isinstance(n, ast.FunctionDef))
        if isinstance(node, ast.Assign):  # constants such as TOKENIZERS
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def named_functions(text):
    """`module.name` and `module.Class.method` references to top-level modules in a document."""
    pattern = r'`(%s)\.([A-Za-z_][\w.]*)(?:\(\))?`' % '|'.join(MODULES)
    return sorted(set(re.findall(pattern, text)))


def test_the_design_notes_name_only_functions_that_exist():
    text = source('docs/design.md')
    refs = named_functions(text)
    assert len(refs) >= 20, "docs/design.md names the function behind each contract"
    missing = [f'{m}.{n}' for m, n in refs if n not in defined_names(m)]
    assert not missing, f"docs/design.md names functions that do not exist: {missing}"


def test_the_reference_finder_reads_backticked_names():
    assert named_functions("`train.sample_row` and `model.VLM.forward()`, not train.py") == [
        ('model', 'VLM.forward'), ('train', 'sample_row')]


REPO_FILE = re.compile(r'(?<![\w./-])((?:docs|config|scripts|tests|assets)/[\w.-]+\.(?:md|py|png|sh|json)'
                       r'|[\w-]+\.(?:md|sh))(?![\w/-])')
GENERATED = {'results.md'}  # study.py writes it into its output folder
DOCUMENTS = ['README.md'] + [f'{m}.py' for m in MODULES]


def test_nothing_cites_a_file_outside_the_repository():
    """Every repository path a document or a docstring names (docs/..., config/..., *.md) exists."""
    names = DOCUMENTS + sorted(os.path.relpath(p, ROOT) for pattern in ('docs/*.md', 'config/*.py')
                               for p in glob.glob(os.path.join(ROOT, pattern)))
    missing = []
    for name in names:
        for ref in set(REPO_FILE.findall(source(name))):
            here = os.path.join(ROOT, os.path.dirname(name), ref)
            if ref in GENERATED:
                continue
            if not (os.path.exists(os.path.join(ROOT, ref)) or os.path.exists(here)):
                missing.append(f'{name}: {ref}')
    assert not missing, f"references to files that are not in the repository: {missing}"


def test_readme_is_short():
    n = source('README.md').count('\n')
    assert n <= 220, f"README.md has {n} lines (at most 220)"
