"""Distillers: `keras.Model` subclasses that train a student from a teacher."""

from tfkd.distillers.base import Distiller  # noqa: F401
from tfkd.distillers.attention import AttentionDistiller  # noqa: F401
from tfkd.distillers.correlation import CorrelationDistiller  # noqa: F401
from tfkd.layers.feature_adapter import FeatureAdapter  # noqa: F401
from tfkd.distillers.feature import FeatureDistiller  # noqa: F401
from tfkd.distillers.fitnet import FitNetDistiller  # noqa: F401
from tfkd.distillers.locality import LocalityPreservingDistiller  # noqa: F401
from tfkd.distillers.adversarial import AdversarialDistiller  # noqa: F401
from tfkd.distillers.collaboration import CollaborationDistiller  # noqa: F401
# Bound here since `import tfkd` became lazy (the tuning package's eager
# import used to bind it): `tfkd.distillers.registry` stays reachable.
from tfkd.distillers import registry  # noqa: F401
