"""MkDocs hooks of the tfkd site (see `hooks:` in mkdocs.yml).

- The "API reference" section gets one generated page per public module of
  the `tfkd` package (found on disk, not imported: building the site does
  not need TensorFlow), each rendered from its docstrings by mkdocstrings.
- The "Results" section gets every `docs/results_*.md` and
  `docs/benchmarks.md` that exists (other contributors add them), and the
  `<!-- tfkd:results-pages -->` marker in results.md becomes a list of links
  to them.
- The "Methods" section is the methods index plus one page per method
  module (`docs/methods/<module>.md` for `tfkd/methods/<module>.py`, titled
  by its first heading), read from the registry: a new method's page needs
  no mkdocs.yml edit, and a method without a page fails the build. The
  `<!-- tfkd:methods-table -->` marker becomes the method table that
  `tfkd.distillers.registry.method_table()` derives from the knowledge
  terms, each method linked to its page (this imports tfkd, hence
  TensorFlow). Any other page not listed in the nav goes to a "More"
  section, so a strict build never fails on an omitted page.
- Defaults are never retyped: on the method pages, `{{ defaults: METHOD }}`
  becomes the table of
  the method's arguments and defaults, `{{ default: METHOD.ARGUMENT }}` (or
  `FUNCTION.ARGUMENT` for a `tfkd.losses` function) one value, both read
  from the signatures (`tfkd.distillers.registry.expand_defaults`).
- Formulas (`pymdownx.arithmatex`, `$$ ... $$` and `\\( ... \\)`) are
  typeset in the browser by MathJax 3, served from the site itself: the
  MathJax component and its fonts are copied at build time from the
  `django-static-mathjax` pip package (a plain copy of MathJax's release
  files, no Django needed; in the `docs` and `test` extras). Nothing is
  fetched from a CDN, at build time or when reading.
"""

import ast
import importlib.util
import os
import re

PACKAGE = "tfkd"
REFERENCE_DIR = "reference"
RESULTS_MARKER = "<!-- tfkd:results-pages -->"
REFERENCE_MARKER = "<!-- tfkd:reference-modules -->"
METHODS_MARKER = "<!-- tfkd:methods-table -->"

_state = {"modules": [], "results": [], "more": []}

#: Where the site serves MathJax (mkdocs.yml's `extra_javascript` loads
#: `MATHJAX_DIR/tex-chtml.js`); its fonts follow at MathJax's own relative
#: path, `output/chtml/fonts/woff-v2/`.
MATHJAX_DIR = "javascripts/mathjax"
#: MathJax's files in the pip package, relative to its `es5/` folder.
MATHJAX_FILES = ("tex-chtml.js",)
MATHJAX_FONTS = os.path.join("output", "chtml", "fonts", "woff-v2")


def mathjax_source():
    """The `es5/` folder of MathJax in the installed `django-static-mathjax`
    package (found without importing it: it is a Django app).

    Raises:
        FileNotFoundError: If the package is not installed, with the fix.
    """
    spec = importlib.util.find_spec("mathjax")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        es5 = os.path.join(folder, "static", "mathjax", "es5")
        if os.path.exists(os.path.join(es5, MATHJAX_FILES[0])):
            return es5
    raise FileNotFoundError(
        "The docs typeset formulas with MathJax, copied from the "
        "`django-static-mathjax` pip package, which is not installed. "
        "Install the docs toolchain: pip install -e '.[docs]'."
    )


def _root(config):
    return os.path.dirname(os.path.abspath(config["config_file_path"]))


def _summary(path):
    """First line of a module's docstring, read without importing it."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return ""
    doc = ast.get_docstring(tree) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _public_modules(package_dir):
    """`[(dotted name, is_package, summary)]` of the package, sorted."""
    modules = []
    base = os.path.dirname(package_dir)
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(("_", "."))
            and os.path.exists(os.path.join(folder, d, "__init__.py"))
        )
        rel = os.path.relpath(folder, base).split(os.sep)
        if any(part.startswith("_") for part in rel):
            continue
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            if name == "__init__.py":
                modules.append((".".join(rel), True, _summary(path)))
            elif not name.startswith("_"):
                modules.append((".".join(rel + [name[:-3]]), False,
                                _summary(path)))
    return sorted(modules, key=lambda m: m[0].split("."))


def _page(module):
    return f"{REFERENCE_DIR}/{module}.md"


def _reference_nav(modules):
    """Nav entries: top-level modules, then one section per subpackage."""
    entries = [f"{REFERENCE_DIR}/index.md"]
    sections = {}
    for name, is_package, _ in modules:
        parts = name.split(".")
        if len(parts) == 1 or (len(parts) == 2 and not is_package):
            entries.append({name: _page(name)})
        else:
            sections.setdefault(".".join(parts[:2]), []).append(
                {name: _page(name)})
    for section, pages in sections.items():
        entries.append({section: pages})
    return entries


def _listed(nav):
    """Every page path mentioned in a nav configuration."""
    found = set()
    for item in nav or []:
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            for value in item.values():
                if isinstance(value, str):
                    found.add(value)
                else:
                    found |= _listed(value)
        elif isinstance(item, list):
            found |= _listed(item)
    return found


def _pages_on_disk(docs_dir):
    pages = []
    for folder, dirs, files in os.walk(docs_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.endswith(".md") and not name.startswith((".", "_")):
                rel = os.path.relpath(os.path.join(folder, name), docs_dir)
                pages.append(rel.replace(os.sep, "/"))
    return pages


def _replace_section(nav, title, entries):
    for i, item in enumerate(nav):
        if isinstance(item, dict) and title in item:
            nav[i] = {title: entries}
            return True
    return False


def method_pages(docs_dir):
    """The "Methods" nav section: the index, then one page per method
    module, in the registry's order.

    Raises:
        ValueError: If a method has no page.
    """
    from tfkd.distillers import registry

    pages = []
    for name in registry.method_names():
        page = f"methods/{registry.method_page(name)}"
        if not os.path.exists(os.path.join(docs_dir, page)):
            raise ValueError(
                f"Method {name!r} has no docs page: write docs/{page} (its "
                "module's name), which the site lists by itself.")
        if page not in pages:
            pages.append(page)
    return ["methods/index.md"] + [
        {_title(docs_dir, page): page} for page in pages]


def on_config(config):
    root = _root(config)
    modules = _public_modules(os.path.join(root, PACKAGE))
    _state["modules"] = modules
    nav = config["nav"]
    _replace_section(nav, "API reference", _reference_nav(modules))
    _replace_section(nav, "Methods", method_pages(config["docs_dir"]))
    listed = _listed(nav)
    on_disk = [p for p in _pages_on_disk(config["docs_dir"])
               if p not in listed and not p.startswith(f"{REFERENCE_DIR}/")]
    results = sorted(p for p in on_disk
                     if re.fullmatch(r"results_[^/]*\.md", p))
    if "benchmarks.md" in on_disk:
        results.append("benchmarks.md")
    more = [p for p in on_disk if p not in results]
    _state["results"], _state["more"] = results, more
    _replace_section(nav, "Results", ["results.md"] + results)
    if more:
        nav.append({"More": more})
    return config


def _module_page(name, is_package, modules):
    lines = [f"# `{name}`", ""]
    if is_package:
        lines += [f"::: {name}", "    options:", "      members: false", ""]
        children = [m for m in modules if m[0].startswith(name + ".")
                    and m[0].count(".") == name.count(".") + 1]
        if children:
            lines += ["## Modules", ""]
            lines += [f"- [`{child}`]({child}.md) — {summary}"
                      for child, _, summary in children]
            lines.append("")
    else:
        lines += [f"::: {name}", ""]
    return "\n".join(lines)


def on_files(files, config):
    from mkdocs.structure.files import File

    modules = _state["modules"]
    index = ["# API reference", "",
             "Generated from the docstrings of every public module "
             "(Keras-style: summary, `Args`, `Returns`, `Example`, "
             "`Reference`). The examples are run as doctests by "
             "`tests/test_doctests.py`.", "",
             "| module | summary |", "| --- | --- |"]
    for name, _, summary in modules:
        index.append(f"| [`{name}`]({name}.md) | "
                     f"{summary.replace('|', chr(92) + '|')} |")
    files.append(File.generated(config, f"{REFERENCE_DIR}/index.md",
                                content="\n".join(index) + "\n"))
    es5 = mathjax_source()
    names = list(MATHJAX_FILES) + [
        os.path.join(MATHJAX_FONTS, name)
        for name in sorted(os.listdir(os.path.join(es5, MATHJAX_FONTS)))]
    for name in names:
        uri = f"{MATHJAX_DIR}/{name}".replace(os.sep, "/")
        files.append(File.generated(config, uri,
                                    abs_src_path=os.path.join(es5, name)))
    # MathJax's licence (Apache-2.0) travels with its files.
    files.append(File.generated(
        config, f"{MATHJAX_DIR}/LICENSE",
        abs_src_path=os.path.join(os.path.dirname(es5), "LICENSE")))
    for name, is_package, _ in modules:
        files.append(File.generated(
            config, _page(name),
            content=_module_page(name, is_package, modules)))
    return files


def _title(docs_dir, page):
    try:
        with open(os.path.join(docs_dir, page), encoding="utf-8") as f:
            for line in f:
                if line.startswith("# "):
                    return line[2:].strip()
    except OSError:
        pass
    return page[:-3].replace("_", " ")


def _methods_table():
    """The method table, derived from the terms by the registry (with the
    nav, the part of the site that imports tfkd); the methods index links
    each method to its page."""
    from tfkd.distillers import registry

    return registry.method_table(links=True)


def expand(markdown, path):
    """The Markdown of the page at `path` (relative to docs/) with the
    method table and, on the method pages, the defaults generated: what the
    site shows (the tests read the pages through this). Other pages may
    quote a placeholder (the tutorial does)."""
    from tfkd.distillers import registry

    if METHODS_MARKER in markdown:
        markdown = markdown.replace(METHODS_MARKER, _methods_table())
    if path.replace(os.sep, "/").startswith("methods/"):
        markdown = registry.expand_defaults(markdown)
    return markdown


def on_page_markdown(markdown, page, config, files):
    markdown = expand(markdown, page.file.src_uri)
    if RESULTS_MARKER in markdown:
        results = _state["results"]
        if results:
            links = "\n".join(
                f"- [{_title(config['docs_dir'], p)}]({p})" for p in results)
        else:
            links = ("*No results pages yet: they appear here as "
                     "`docs/results_*.md` and `docs/benchmarks.md` are "
                     "added.*")
        markdown = markdown.replace(RESULTS_MARKER, links)
    return markdown
