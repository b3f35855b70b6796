"""The service's configuration, validated once at start-up.

Every key has a default except the API key, and each key can come from four
places; the first that sets it wins:

1. the environment: ``RFMCUBE_CDC__<SECTION>__<KEY>``, a double underscore
   per level (``RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVERS``,
   ``RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD``);
2. the secrets directory (``--secrets-dir``): one file per key, named like
   the variable and holding the value, as a mounted Kubernetes Secret is;
3. the YAML file (``--config``);
4. the defaults, each section's own.

The API key is apart: ``$RFMCUBE_API_KEY``, else the file ``api.key_file`` (a
mounted secret), and never the YAML, so the file can live in a ConfigMap.
Every problem is reported at once, each with the path of its key, what was
probably meant where a name is wrong, and where the value came from
(``kafka.bootstrap_server: Extra inputs are not permitted (did you mean
bootstrap_servers?) [environment variable RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER]``);
no message, repr or log line holds a secret. What kafka-python would only find
when it connects is refused here too: a security protocol or SASL mechanism
whose library is missing, an ``ssl_*file`` that does not exist.

Modules, by role: :mod:`.section` (the base of every section),
:mod:`.kafka_sections` (``kafka`` and its schema registry), :mod:`.api_sections`
(``api``, ``pacing``), :mod:`.service_sections` (``store``, ``privacy``,
``service``), :mod:`.settings` (the whole, :class:`Settings`), :mod:`.loading`
(:func:`load_settings` and its error reports).
"""

from consumer.config.api_sections import API_KEY_ENV, ApiConfig, PacingConfig
from consumer.config.kafka_sections import KafkaConfig, SchemaRegistryConfig
from consumer.config.loading import CONFIG_ENV, SECRETS_DIR_ENV, load_settings
from consumer.config.service_sections import (
    ANONYMIZE_KEY_ENV,
    PrivacyConfig,
    ServiceConfig,
    StoreConfig,
)
from consumer.config.settings import ENV_PREFIX, NESTING, Settings

__all__ = [
    "ANONYMIZE_KEY_ENV",
    "API_KEY_ENV",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "NESTING",
    "SECRETS_DIR_ENV",
    "ApiConfig",
    "KafkaConfig",
    "PacingConfig",
    "PrivacyConfig",
    "SchemaRegistryConfig",
    "ServiceConfig",
    "Settings",
    "StoreConfig",
    "load_settings",
]
