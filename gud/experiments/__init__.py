"""One module per experiment, each with ``CONFIGS = {profile: config}``; read them through
:func:`gud.profiles.experiment_config`."""
