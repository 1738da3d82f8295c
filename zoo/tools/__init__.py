"""Research tooling at the edge of the library: programs that make data for experiments (e.g.
`zoo.tools.tts`, a synthetic speech corpus read by eSpeak NG and Flite) and that no model or
task needs to train or predict. They may use ``tasks`` and ``zoo``; nothing in ``encoders``,
``tasks`` or the rest of ``zoo`` imports them (only the ``zoo`` command does, when asked)."""
