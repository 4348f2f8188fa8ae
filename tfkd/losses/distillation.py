"""tfkd's knowledge terms under their Keras-style `...Distillation` names.

The terms live in `tfkd.terms` (one module per method); this module, like
`tfkd.losses` itself, returns any of them by name, so
`tfkd.losses.distillation.CorrelationDistillation` keeps working.
"""


def __getattr__(name):
    import tfkd.terms

    return getattr(tfkd.terms, name)
