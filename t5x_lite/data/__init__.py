"""The data layer: vocabularies, sources, preprocessors, registry, feature converters, pipeline."""
