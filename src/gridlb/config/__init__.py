"""Site configuration: the seed's Hiera YAML and keepalived.conf, validated into one typed model."""
