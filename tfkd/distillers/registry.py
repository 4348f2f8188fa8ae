"""The distillation methods, derived from the knowledge terms.

Every term class that declares a `method` (`tfkd.terms.Method`) is a
method: `tfkd demo --method`, `tfkd tune`, the recipes, the docs' method
table and the test battery all read this registry, and the registry reads
the terms. Every module of the `tfkd.methods` package is imported (a module
that fails to import fails loudly), so a new method is one new module there
plus its test and its docs page.
"""

import dataclasses
import importlib
import inspect
import re

#: Arguments of a method's distiller that are never hyperparameters.
NOT_HYPERPARAMETERS = frozenset({
    "self", "teacher", "student", "teacher_layer", "student_layer", "name",
    "dtype", "trainable", "teacher_layer_name", "student_layer_name",
    "guided_channels", "regressor", "kwargs", "knowledge",
    "collaboration_loss", "student_loss", "distillation_losses",
    "distillation_loss_weights", "student_loss_weight",
    "regressor_pretrained",
    # An option of the engine (`tfkd.Distiller`), not of a method.
    "unlabelled_weight",
})

_EXTRA_TERMS = []


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method: its term class and how to build its distiller.

    Attributes:
        name: The method's name.
        term: The `tfkd.terms.DistillationTerm` subclass providing it.
        method: The term's `tfkd.terms.Method` entry.
    """

    name: str
    term: type
    method: object

    @property
    def description(self):
        return self.method.description

    @property
    def paper(self):
        return self.method.paper

    @property
    def uses_features(self):
        return self.method.uses_features

    @property
    def two_optimizers(self):
        return self.method.two_optimizers

    @property
    def preset(self):
        return self.method.preset

    @property
    def build_defaults(self):
        return dict(self.method.build_defaults)

    @property
    def search_space(self):
        return dict(self.method.search_space)

    @property
    def target(self):
        """`"module:Class"` of the distiller that builds the method."""
        return self.preset or "tfkd.distillers.base:Distiller"

    def load(self):
        """The distiller class (the preset, or `tfkd.Distiller`)."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def arguments(self):
        """`{argument: default}` a user may set for this method (the
        tunable ones: no models, taps or objects)."""
        if self.preset:
            functions = [self.load().__init__]
        else:
            functions = [self.term.__init__]
        arguments = {}
        # Arguments whose signature default is `None` but which a preset
        # resolves to a value (Hinton KD's `alpha` and `temperature`).
        resolved = getattr(self.load(), "preset_defaults", {}) \
            if self.preset else {}
        for function in functions:
            for name, p in inspect.signature(function).parameters.items():
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and (
                    name not in NOT_HYPERPARAMETERS
                ):
                    default = p.default
                    if default is None and name in resolved:
                        default = resolved[name]
                    arguments[name] = default
        if not self.preset:
            arguments["weight"] = self.method.weight
            arguments["student_loss_weight"] = self.method.student_loss_weight
            if self.method.soft_targets:
                from tfkd.methods.kd import SOFT_TARGETS

                arguments["soft_target_weight"] = SOFT_TARGETS["weight"]
                arguments["soft_target_temperature"] = (
                    SOFT_TARGETS["temperature"])
        arguments.update(self.build_defaults)
        return arguments

    def defaults(self):
        """The values `build` uses unless overridden."""
        return self.arguments()


def _import_term_modules():
    import tfkd.terms

    # A term module that fails to import is a bug: let it raise.
    tfkd.terms.import_all()


def register(term_class):
    """Registers a term class defined outside `tfkd.terms` (its `method`
    entries become methods).

    Args:
        term_class: A `tfkd.terms.DistillationTerm` subclass with a
            `method`.

    Returns:
        `term_class` (usable as a class decorator).
    """
    from tfkd.terms.base import DistillationTerm
    from tfkd.terms.base import methods_of

    if not (isinstance(term_class, type)
            and issubclass(term_class, DistillationTerm)):
        raise TypeError(
            "`register` takes a `tfkd.terms.DistillationTerm` subclass. "
            f"Received: {term_class!r}."
        )
    if not methods_of(term_class):
        raise ValueError(
            f"{term_class.__name__} declares no `method`, so it provides no "
            "method to register. Give it `method = tfkd.terms.Method(...)`."
        )
    if term_class not in _EXTRA_TERMS:
        _EXTRA_TERMS.append(term_class)
    return term_class


def methods():
    """`{name: MethodSpec}` of every method, in name order.

    Raises:
        ValueError: If two terms declare the same method name.
    """
    from tfkd.terms.base import methods_of
    from tfkd.terms.base import term_classes

    _import_term_modules()
    found = {}
    for term in term_classes() + _EXTRA_TERMS:
        for method in methods_of(term):
            other = found.get(method.name)
            if other is not None and other.term is not term:
                raise ValueError(
                    f"Two terms declare the method {method.name!r}: "
                    f"{other.term.__name__} and {term.__name__}. Rename one."
                )
            found[method.name] = MethodSpec(method.name, term, method)
    return dict(sorted(found.items()))


def method_names():
    """Names of all methods, sorted."""
    return list(methods())


def get(name):
    """Returns the `MethodSpec` of `name` or raises a clear `ValueError`."""
    table = methods()
    if name not in table:
        raise ValueError(
            f"Unknown distillation method. Received: method={name!r}. "
            f"Choose one of {list(table)}."
        )
    return table[name]


def digits_taps(method=None):
    """`(teacher_layer, student_layer)` tapped on the digits demo pair.

    Methods that compare pooled embeddings (`Method.embedding`: LP, RKD,
    PKT, CC, CRD) tap the pooled `gap` layer; LP on the 8×8 conv maps, for
    one, swamps the class loss until the student's features collapse with
    the paper's raw features (3 seeds, 300 labels: 81 % tapping `gap`, 78 %
    on the 8×8 map with unit-length features, 15 % on it with raw ones; see
    docs/methods/lp.md). The others tap the last conv block.

    Args:
        method: Optional method name.

    Returns:
        A `(teacher_layer, student_layer)` pair of layer names.

    Example:

    >>> digits_taps("lp")
    ('gap', 'gap')
    """
    from tfkd.models.digits import DIGITS_FEATURE_LAYER

    if method is not None and get(method).method.embedding:
        return ("gap", "gap")
    return (DIGITS_FEATURE_LAYER, DIGITS_FEATURE_LAYER)


def build(name, teacher, student, feature_layers=None, **overrides):
    """Builds the distiller of method `name` on `teacher` and `student`.

    Args:
        name: A method name (see `method_names()`).
        teacher: The trained teacher `keras.Model`.
        student: The student `keras.Model`.
        feature_layers: `(teacher_layer, student_layer)` for feature methods
            (ignored by methods that read only the logits, so one call
            serves every method).
        **overrides: Arguments replacing the method's defaults (see
            `get(name).arguments()`). A method whose record has
            `soft_targets` also takes `soft_target_weight` and
            `soft_target_temperature` (the added
            `tfkd.losses.SoftTargetDistillation`; weight 0 leaves it out).
            Every method also takes `tfkd.Distiller`'s `unlabelled_weight`.

    Returns:
        The constructed distiller (not compiled).

    Raises:
        ValueError: If `soft_target_*` is given to a method without soft
            targets, or `soft_target_temperature` with weight 0.

    Example:

    >>> from tfkd import testing
    >>> d = build("kd", testing.tiny_conv_model("t"),
    ...           testing.tiny_conv_model("s"), temperature=2.0)
    >>> d.temperature
    2.0
    """
    spec = get(name)
    kwargs = spec.build_defaults
    kwargs.update(overrides)
    given = [k for k in ("soft_target_weight", "soft_target_temperature")
             if k in overrides]
    if given and not spec.method.soft_targets:
        raise ValueError(
            f"Method {name!r} adds no soft targets to its objective (a "
            f"preset carries its own logit term), so it takes no "
            f"`{given[0]}`. Received: {given[0]}={overrides[given[0]]!r}.")
    if spec.uses_features:
        if feature_layers is None:
            raise ValueError(
                f"Method {name!r} distils intermediate features: pass "
                f"`feature_layers=(teacher_layer, student_layer)`. "
                f"Received: feature_layers=None."
            )
        if not (isinstance(feature_layers, (list, tuple))
                and len(feature_layers) == 2):
            raise ValueError(
                "`feature_layers` must be a pair (teacher_layer, "
                f"student_layer). Received: feature_layers={feature_layers!r}."
            )
    if spec.preset:
        if spec.uses_features:
            kwargs.setdefault("teacher_layer_name", feature_layers[0])
            kwargs.setdefault("student_layer_name", feature_layers[1])
        return spec.load()(teacher, student, **kwargs)
    from tfkd.distillers.base import Distiller

    # Options of the engine every method takes (presets pass them on).
    engine_options = {k: kwargs.pop(k) for k in ("unlabelled_weight",)
                      if k in kwargs}
    weight = kwargs.pop("weight", spec.method.weight)
    student_loss_weight = kwargs.pop("student_loss_weight",
                                     spec.method.student_loss_weight)
    soft = _soft_targets(spec, kwargs, overrides)
    if spec.uses_features:
        kwargs.setdefault("teacher_layer_name", feature_layers[0])
        kwargs.setdefault("student_layer_name", feature_layers[1])
    terms, weights = [spec.term(**kwargs)], [weight]
    if soft is not None:
        terms.append(soft[0])
        weights.append(soft[1])
    return Distiller(teacher, student, terms,
                     distillation_loss_weights=weights,
                     student_loss_weight=student_loss_weight,
                     **engine_options)


def _soft_targets(spec, kwargs, overrides):
    """`(SoftTargetDistillation term, weight)` a method without a preset
    adds to its objective (its record's `soft_targets`, at
    `tfkd.methods.kd.SOFT_TARGETS`), or `None`; pops the
    `soft_target_*` arguments from `kwargs`.

    Raises:
        ValueError: If `soft_target_temperature` is given with
            `soft_target_weight=0` (no term to use it).
    """
    from tfkd import hyperparameters as hp
    from tfkd.methods.kd import SOFT_TARGETS
    from tfkd.methods.kd import SoftTargetDistillation

    if not spec.method.soft_targets:
        return None
    weight = hp.non_negative(
        kwargs.pop("soft_target_weight", SOFT_TARGETS["weight"]),
        "soft_target_weight")
    temperature = kwargs.pop("soft_target_temperature",
                             SOFT_TARGETS["temperature"])
    if weight == 0:
        if "soft_target_temperature" in overrides:
            raise ValueError(
                "`soft_target_temperature` sets the soft-target term, which "
                "`soft_target_weight=0` leaves out. Received: "
                f"soft_target_temperature={temperature!r}, "
                "soft_target_weight=0. Drop one of them.")
        return None
    return SoftTargetDistillation(temperature=temperature, name="soft"), \
        weight


def method_table(links=False):
    """The methods as a Markdown table (method, what it does, paper,
    class), for the README and the docs.

    Args:
        links: Whether each method's name links to its docs page (the
            docs' methods index: `[kd](kd.md)`).

    Example:

    >>> print(method_table().splitlines()[0])
    | method | what it distils | paper | built by |
    """
    rows = ["| method | what it distils | paper | built by |",
            "| --- | --- | --- | --- |"]
    for spec in methods().values():
        built = spec.target.split(":")[1]
        term = spec.term.__name__
        by = f"`tfkd.{built}`" if spec.preset else \
            f"`tfkd.Distiller` + `tfkd.losses.{term}`"
        label = f"`{spec.name}`"
        if links:
            label = f"[{label}]({method_page(spec.name)})"
        rows.append(f"| {label} | {spec.description} | {spec.paper} "
                    f"| {by} |")
    return "\n".join(rows)


#: `{{ defaults: METHOD }}` (a table of every argument and its default) and
#: `{{ default: OWNER.ARGUMENT }}` (one value, e.g. in a table cell; OWNER
#: is a method, or a `tfkd.losses` or `tfkd` name, possibly dotted:
#: `AdversarialDistiller.compile`): the docs' placeholders for defaults, so
#: that no page retypes a value the code holds.
DEFAULTS_PLACEHOLDER = re.compile(
    r"\{\{\s*(defaults|default):\s*([A-Za-z_][\w.]*)\s*\}\}")


def format_default(value):
    """How the docs print a default: `4.0`, `30000`, `'code'`, `None`."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e3:
        return str(int(value))
    return repr(value)


def defaults_table(name):
    """The Markdown table of method `name`'s arguments and their defaults,
    read from its constructor's signature (and its record: `weight`,
    `student_loss_weight`, the registry's build defaults).

    Example:

    >>> print(defaults_table("kd").splitlines()[0])
    | argument | default |
    """
    rows = ["| argument | default |", "| --- | --- |"]
    for argument, value in get(name).defaults().items():
        rows.append(f"| `{argument}` | `{format_default(value)}` |")
    return "\n".join(rows)


def _owner(path):
    """The function or class a dotted docs path names, or `None`."""
    import tfkd
    import tfkd.losses

    head, *rest = path.split(".")
    owner = getattr(tfkd.losses, head, None)
    if owner is None and not head.startswith("_"):
        owner = getattr(tfkd, head, None)
    for part in rest:
        owner = getattr(owner, part, None)
    return owner if callable(owner) else None


def default_value(path):
    """The default `path` (`METHOD.ARGUMENT` or `OWNER.ARGUMENT`) names.

    Raises:
        ValueError: If `path` names no default.

    Example:

    >>> default_value("pkt.weight"), default_value("kd_loss.temperature")
    (30000.0, 4.0)
    """
    owner, _, argument = path.rpartition(".")
    if owner in methods():
        table = get(owner).defaults()
        if argument not in table:
            raise ValueError(
                f"Method {owner!r} has no argument {argument!r}: its "
                f"arguments are {list(table)}. Fix the docs placeholder "
                f"`{{{{ default: {path} }}}}`.")
        return table[argument]
    function = _owner(owner) if owner else None
    parameters = (inspect.signature(function).parameters
                  if function is not None else {})
    if argument not in parameters or (
            parameters[argument].default is inspect.Parameter.empty):
        raise ValueError(
            f"`{{{{ default: {path} }}}}` names no default: {owner!r} is "
            f"neither a method ({method_names()}) nor a `tfkd.losses` or "
            f"`tfkd` function or class with a keyword argument "
            f"{argument!r}.")
    return parameters[argument].default


def expand_defaults(markdown):
    """Replaces the docs' default placeholders (`DEFAULTS_PLACEHOLDER`) in
    `markdown` by the values the code holds.

    Raises:
        ValueError: If a placeholder names an unknown method, function or
            argument.

    Example:

    >>> expand_defaults("T = {{ default: kd.temperature }}")
    'T = 4.0'
    """
    def replace(match):
        kind, path = match.groups()
        if kind == "defaults":
            if path not in methods():
                raise ValueError(
                    f"`{{{{ defaults: {path} }}}}` takes a method name, "
                    f"one of {method_names()}.")
            return defaults_table(path)
        return format_default(default_value(path))

    return DEFAULTS_PLACEHOLDER.sub(replace, markdown)


def method_page(name):
    """The docs page of method `name`, relative to `docs/methods/`: its
    module's name (`ktan.md` serves KTAN and DLN)."""
    return get(name).term.__module__.rsplit(".", 1)[1] + ".md"
